"""dicom-deid: de-identify DICOM studies, including the faces in their video.

    from dicom_deid import Deidentifier
    outcome = Deidentifier("basic", key="site.key").deidentify("in.dcm")

docs/LIBRARY.md describes the library API; every error it raises is a DeidError, whose
message carries no PHI.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    # One source of the version: pyproject.toml, as installed.
    __version__ = version("dicom-deid")
except PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0+unknown"

__all__ = ["DeidError", "Deidentifier", "Outcome", "__version__"]

if TYPE_CHECKING:
    from dicom_deid.deidentifier import Deidentifier, Outcome
    from dicom_deid.errors import DeidError


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI imports this package for __version__ alone and must not
    # pay for pydicom and the stages on every command (docs/CONTRACTS.md).
    if name in ("Deidentifier", "Outcome"):
        from dicom_deid import deidentifier

        return getattr(deidentifier, name)
    if name == "DeidError":
        from dicom_deid.errors import DeidError

        return DeidError
    raise AttributeError(f"module 'dicom_deid' has no attribute {name!r}")
