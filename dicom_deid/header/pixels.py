"""What the pixel stage did, as the header engine reports it, and which pixels may show a face."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class PixelStatus:
    """What the pixel stage actually did to one instance.

    Drives BurnedInAnnotation, RecognizableVisualFeatures, the CID 7050 codes 113101 and
    113102 and DeidentificationMethod. Pass None to the engine when the pixels were not
    touched: then nothing is labelled as cleaned.
    """

    burned_in_annotation_cleaned: bool = False
    faces_cleaned: bool = False
    method: str | None = None


# Visible-light photography, video and secondary capture can show a person; microscopy
# and whole-slide imaging cannot show a face.
_FACE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.77.1.1",    # VL endoscopic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.4",    # VL photographic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.5",    # ophthalmic photography and tomography
    "1.2.840.10008.5.1.4.1.1.77.1.7",    # dermoscopic photography
    "1.2.840.10008.5.1.4.1.1.7",         # secondary capture, all kinds
)
_FACE_MODALITIES = frozenset({"XC", "ES", "OP", "SC", "OT", "DMS", "VL", "EPS"})
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def has_pixels(ds: Dataset) -> bool:
    return any(tag in ds for tag in _PIXEL_TAGS)


def may_show_face(ds: Dataset) -> bool:
    """True when the instance has pixel data of a kind that can show a person's face."""
    if not has_pixels(ds):
        return False
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if any(sop_class == p or sop_class.startswith(p + ".") for p in _FACE_SOP_PREFIXES):
        return True
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return modality in _FACE_MODALITIES
