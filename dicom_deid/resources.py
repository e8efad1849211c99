"""Locate the data shipped with the package: profiles/ and models/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_dir(package: str) -> Path:
    return Path(str(resources.files(package)))


def profiles_dir() -> Path:
    """Directory holding the shipped YAML profiles (the repository's profiles/)."""
    return _package_dir("dicom_deid._profiles")


def models_dir() -> Path:
    """Directory holding the shipped model files (the repository's models/)."""
    return _package_dir("dicom_deid._models")


def model_path(name: str) -> Path:
    """Path of one shipped model file; a clear error when it is missing."""
    path = models_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"model file {name!r} is not installed (looked in {models_dir()})")
    return path
