"""dicom-deid: de-identify DICOM studies, including the faces in their video."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One source of the version: pyproject.toml, as installed.
    __version__ = version("dicom-deid")
except PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0+unknown"
