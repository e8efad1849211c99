"""Choosing the syntax to write: keep the source's when it fits, else the closest one that does."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    MPEG2MPHL,
    MPEG2MPML,
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP41F,
    MPEG4HP42STEREO,
    MPEG4HP422D,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicom_deid.video.encode_mpeg import mpeg2_rate
from dicom_deid.video.errors import VideoError
from dicom_deid.video.info import exact_rate
from dicom_deid.video.syntaxes import (
    Geometry,
    choose_pixel_syntax,
    choose_video_syntax,
    limit_problem,
)


@pytest.mark.parametrize(
    ("requested", "source", "geometry", "expected", "changed"),
    [
        ("same", MPEG2MPML, (720, 576, 25), MPEG2MPML, False),
        ("same", MPEG2MPML, (1920, 1080, 25), MPEG2MPHL, True),        # beyond Main Level
        ("same", MPEG2MPHL, (1920, 1080, 25), MPEG2MPHL, False),
        ("same", MPEG4HP41, (1920, 1080, 25), MPEG4HP41, False),
        ("same", MPEG4HP41, (1920, 1080, 60), MPEG4HP422D, True),      # level 4.1 macroblock rate
        ("same", MPEG4HP41, (3840, 2160, 30), HEVCMP51, True),         # beyond any H.264 syntax
        ("same", MPEG4HP41F, (640, 480, 25), MPEG4HP41F, False),       # fragmentable form kept
        ("same", MPEG4HP41BD, (1920, 1080, 24), MPEG4HP41BD, False),
        ("same", MPEG4HP41BD, (640, 480, 25), MPEG4HP41, True),        # not a Blu-ray format
        ("same", MPEG4HP42STEREO, (1280, 720, 25), MPEG4HP422D, True),  # no MVC encoder
        ("same", HEVCM10P51, (1920, 1080, 50), HEVCM10P51, False),
        ("h264", MPEG2MPML, (720, 576, 25), MPEG4HP41, False),
        ("hevc", MPEG4HP41, (1280, 720, 25), HEVCMP51, False),
        ("mpeg2", HEVCMP51, (1280, 720, 50), MPEG2MPHL, True),
    ],
)
def test_choose_video_syntax(requested, source, geometry, expected, changed) -> None:
    choice = choose_video_syntax(requested, source, Geometry(*geometry))
    assert choice.uid == expected
    assert (choice.reason is not None) == changed


def test_nothing_fits() -> None:
    with pytest.raises(VideoError, match="no video transfer syntax fits"):
        choose_video_syntax("same", MPEG4HP41, Geometry(8192, 8192, 60))
    assert limit_problem(MPEG2MPML, Geometry(720, 480, 30)) is None
    assert "exceeds" in limit_problem(MPEG2MPML, Geometry(720, 576, 30))


@pytest.mark.parametrize(
    ("requested", "source", "expected", "changed"),
    [
        ("same", JPEGBaseline8Bit, JPEGBaseline8Bit, False),
        ("same", RLELossless, RLELossless, False),
        ("same", JPEGLosslessSV1, JPEGLSLossless, True),     # no JPEG lossless encoder
        ("same", "1.2.840.10008.1.2.4.201", JPEG2000Lossless, True),  # HTJ2K lossless
        ("same", "1.2.840.10008.1.2.2", ExplicitVRLittleEndian, True),  # big endian retired
        ("rle", ExplicitVRLittleEndian, RLELossless, False),
        ("jpeg-ls", ExplicitVRLittleEndian, JPEGLSLossless, False),
    ],
)
def test_choose_pixel_syntax(requested, source, expected, changed) -> None:
    choice = choose_pixel_syntax(requested, source)
    assert choice.uid == expected
    assert (choice.reason is not None) == changed


def test_frame_rates() -> None:
    from fractions import Fraction

    assert exact_rate(1000 / 33.367) == Fraction(30000, 1001)
    assert exact_rate(25.0) == Fraction(25)
    assert exact_rate(1000 / 41.708) == Fraction(24000, 1001)
    assert exact_rate(7.0) == Fraction(7)
    # MPEG-2 codes only some rates: a codable one is kept, others get the nearest.
    assert mpeg2_rate(Fraction(25)) == Fraction(25)
    assert mpeg2_rate(Fraction(15)) == Fraction(15)
    assert abs(float(mpeg2_rate(Fraction(7))) - 7) < 0.06  # 120000/17017: 7 itself is not codable
