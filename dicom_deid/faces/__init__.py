"""faces stage: find and follow faces, replace them (swap, mask3d, blur, pixelate, blackout),
fail closed, and check the output independently for leaks.

The public API is `FaceReplacer` (docs/CONTRACTS.md); importing this package is light, the
models load when a replacer is built.
"""

from dicom_deid.face_methods import MethodUnavailableError
from dicom_deid.faces.region import covered_region
from dicom_deid.faces.replacer import (
    FaceReplacer,
    FaceResult,
    FacesReport,
    FrameResult,
)

__all__ = [
    "FaceReplacer",
    "FaceResult",
    "FacesReport",
    "FrameResult",
    "MethodUnavailableError",
    "covered_region",
]
