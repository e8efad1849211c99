"""`PixelPolicy`: what the pixel stages do to a study (face method, its geometry blend, the
keypoint SR, burned-in text), apart from the header rules of `header.Profile`.

A profile file keeps both in one flat YAML mapping (docs/PROFILES.md); `load_profile` parses
it into a Profile whose `.pixels` is the PixelPolicy.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from dicom_deid import face_methods
from dicom_deid.validation import fail, strict_bool

# swap's default geometry blend, measured with `dicom-deid evaluate` on the London set
# (benchmarks/results/2026-11-24, eyelid and lip openings kept): rank-1 re-identification 9.8%
# at 0, 7.8% at 0.7, 2.0% (chance) at 1; landmark NME MediaPipe 1.4/2.2/2.7%, dlib-68
# 2.7/3.5/4.0% (targets <= 5%, <= 3%, <= 5%). GRID blinks survive at 1 (EAR r 0.76).
DEFAULT_FACE_SHAPE = 1.0
# Burned-in text in the pixels of video and photographs (dicom_deid.text): every text region
# covered by default, only identifying text under redact-phi, none under off.
BURNED_IN_TEXT_MODES = ("redact-all", "redact-phi", "off")


def _faces(value: Any) -> str:
    method = str(value).strip().lower()
    if method not in face_methods.choices():
        raise fail(f"must be one of {', '.join(face_methods.choices())}, not {method!r}")
    return method


def _shape(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise fail("must be a number within 0..1")
    try:
        shape = float(value)
    except ValueError:
        raise fail("must be a number within 0..1") from None
    if not 0.0 <= shape <= 1.0:
        raise fail(f"must be within 0..1, not {shape}")
    return shape


def _step(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(f"must be a whole number >= 1, not {value!r}")
    return value


def _text_mode(value: Any) -> str:
    # YAML 1.1 reads a bare `off` as false.
    mode = "off" if value is False else str(value).strip().lower()
    if mode not in BURNED_IN_TEXT_MODES:
        raise fail(f"must be one of {', '.join(BURNED_IN_TEXT_MODES)}, not {mode!r}")
    return mode


class PixelPolicy(BaseModel):
    """The pixel settings of a profile (the keys below, at the top of a profile file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # face method (face_methods) for camera images and video; 'none': faces left as they are
    faces: Annotated[str, BeforeValidator(_faces)] = face_methods.NONE
    # swap only: 0 keeps the patient's face geometry, 1 the mean shape
    face_shape: Annotated[float, BeforeValidator(_shape)] = DEFAULT_FACE_SHAPE
    # measure keypoints and write them as an SR beside face video
    keypoints: Annotated[bool, BeforeValidator(strict_bool)] = True
    # the SR holds every Nth frame (1: every frame)
    keypoint_frame_step: Annotated[int, BeforeValidator(_step)] = 1
    # text in video/photo pixels
    burned_in_text: Annotated[str, BeforeValidator(_text_mode)] = "redact-all"

    def shape_for(self, method: str) -> float:
        """The geometry blend a renderer of method gets (0 for a method that takes none)."""
        return self.face_shape if face_methods.get(method).shaped else 0.0
