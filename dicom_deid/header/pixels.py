"""What the pixel stage did, as the header engine reports it, and which pixels may show a face."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class PixelStatus:
    """What the pixel stage actually did to one instance.

    Drives BurnedInAnnotation, RecognizableVisualFeatures, the CID 7050 codes 113101 and
    113102 and DeidentificationMethod. Pass None to the engine when the pixels were not
    touched: then nothing is labelled as cleaned. `pixels_modified` False: the face method
    ran on every frame and found no face, so the Pixel Data was kept bit for bit.
    """

    burned_in_annotation_cleaned: bool = False
    faces_cleaned: bool = False
    method: str | None = None
    pixels_modified: bool = True


# Where the face stage may run (profile setting `face_scope`). "camera" (the default):
# instances that can hold a camera image of a person. Video and visible-light IODs always;
# secondary capture only when its pixels are 8-bit colour or its Modality names a camera,
# since a 16-bit grey secondary capture is a screenshot or a converted scan (NM, CT), where a
# face detector finds nothing true and re-encoding would destroy the image.
# "secondary-capture": camera, plus every secondary capture and OT/SC/XC image whatever its
# pixels (the behaviour before the scope existed). "none": the face stage never runs.
FACE_SCOPES = ("camera", "secondary-capture", "none")
_CAMERA_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.77.1.1",    # VL endoscopic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.2",    # VL microscopic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.3",    # VL slide-coordinates microscopic image
    "1.2.840.10008.5.1.4.1.1.77.1.4",    # VL photographic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.5",    # ophthalmic photography and tomography
    "1.2.840.10008.5.1.4.1.1.77.1.7",    # dermoscopic photography
)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"   # and its multi-frame kinds (.1 - .4)
_CAMERA_MODALITIES = frozenset({"XC", "ES", "OP", "GM", "DMS", "VL", "EPS"})
_CAPTURE_MODALITIES = frozenset({"SC", "OT", "XC"})
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def has_pixels(ds: Dataset) -> bool:
    return any(tag in ds for tag in _PIXEL_TAGS)


def _number(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _eight_bit_colour(ds: Dataset) -> bool:
    return _number(ds, "SamplesPerPixel") == 3 and _number(ds, "BitsAllocated") == 8


def _is(sop_class: str, prefix: str) -> bool:
    return sop_class == prefix or sop_class.startswith(prefix + ".")


def may_show_face(ds: Dataset, scope: str = "camera") -> bool:
    """True when the instance has pixel data of a kind that can show a person's face, by
    the face scope (FACE_SCOPES)."""
    if scope == "none" or not has_pixels(ds):
        return False
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if any(_is(sop_class, p) for p in _CAMERA_SOP_PREFIXES):
        return True
    modality = str(ds.get("Modality", "") or "").strip().upper()
    capture = _is(sop_class, _SECONDARY_CAPTURE) or modality in _CAPTURE_MODALITIES
    if not capture:
        return False
    if scope == "secondary-capture":
        return True
    return _eight_bit_colour(ds) or modality in _CAMERA_MODALITIES
