"""Transfer syntaxes the video stage reads and writes, their limits, and how a target is chosen.

Limits come from the profile/level tables of the codec standards that the DICOM transfer syntaxes
name (PS3.5 8.2.5 to 8.2.11): MPEG-2 MP@ML and MP@HL (ISO/IEC 13818-2 Table 8-11/8-12), H.264
levels 4.1 and 4.2 (ITU-T H.264 Table A-1, in macroblocks), HEVC level 5.1 Main tier (H.265
Table A.8). The BD-compatible syntax (.103) is limited further to the Blu-ray progressive formats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    MPEG2MPHL,
    MPEG2MPHLF,
    MPEG2MPML,
    MPEG2MPMLF,
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP41BDF,
    MPEG4HP41F,
    MPEG4HP42STEREO,
    MPEG4HP42STEREOF,
    MPEG4HP422D,
    MPEG4HP422DF,
    MPEG4HP423D,
    MPEG4HP423DF,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_deid.video.errors import VideoError

MPEG2_SYNTAXES = frozenset({MPEG2MPML, MPEG2MPMLF, MPEG2MPHL, MPEG2MPHLF})
H264_SYNTAXES = frozenset(
    {
        MPEG4HP41, MPEG4HP41F, MPEG4HP41BD, MPEG4HP41BDF, MPEG4HP422D, MPEG4HP422DF,
        MPEG4HP423D, MPEG4HP423DF, MPEG4HP42STEREO, MPEG4HP42STEREOF,
    }
)
HEVC_SYNTAXES = frozenset({HEVCMP51, HEVCM10P51})
MPEG_SYNTAXES = MPEG2_SYNTAXES | H264_SYNTAXES | HEVC_SYNTAXES

NATIVE_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}
)

# The fragmentable twin of each single-fragment syntax (PS3.5 A.4.12 ff.); HEVC is fragmentable.
FRAGMENTABLE = {
    MPEG2MPML: MPEG2MPMLF, MPEG2MPHL: MPEG2MPHLF, MPEG4HP41: MPEG4HP41F, MPEG4HP41BD: MPEG4HP41BDF,
    MPEG4HP422D: MPEG4HP422DF, MPEG4HP423D: MPEG4HP423DF, MPEG4HP42STEREO: MPEG4HP42STEREOF,
}
_BASE_OF: dict[str, UID] = {frag: base for base, frag in FRAGMENTABLE.items()}

# Largest value an item can hold (its length is 32 bits, 0xFFFFFFFF is reserved, lengths are even).
MAX_ITEM_LENGTH = 0xFFFFFFFE

FAMILY_NAMES = {"mpeg2": "MPEG-2", "h264": "H.264", "hevc": "HEVC"}

# Lossy Image Compression Method (0028,2114) defined terms (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHOD = {"mpeg2": "ISO_13818_2", "h264": "ISO_14496_10", "hevc": "ISO_23008_2"}


def family(uid: str) -> str | None:
    """'mpeg2', 'h264' or 'hevc' for a video transfer syntax, else None."""
    if uid in MPEG2_SYNTAXES:
        return "mpeg2"
    if uid in H264_SYNTAXES:
        return "h264"
    if uid in HEVC_SYNTAXES:
        return "hevc"
    return None


def base_syntax(uid: str) -> UID:
    """The single-fragment syntax for a fragmentable one (identity otherwise)."""
    return UID(_BASE_OF.get(uid, uid))


def syntax_name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else str(uid)


@dataclass(frozen=True)
class Geometry:
    width: int
    height: int
    fps: float


def _mbs(value: int) -> int:
    return math.ceil(value / 16)


def _h264_level(g: Geometry, max_fs: int, max_mbps: int, label: str) -> str | None:
    w_mb, h_mb = _mbs(g.width), _mbs(g.height)
    frame_mbs = w_mb * h_mb
    max_dim = int(math.sqrt(8 * max_fs))
    if frame_mbs > max_fs or w_mb > max_dim or h_mb > max_dim:
        return f"{g.width}x{g.height} exceeds the frame size of {label}"
    if frame_mbs * g.fps > max_mbps * 1.0001:
        return f"{g.width}x{g.height} at {g.fps:.3g} fps exceeds the macroblock rate of {label}"
    return None


_BD_FORMATS = {(1920, 1080): (24000 / 1001, 24.0, 25.0, 30000 / 1001), (1280, 720): (24000 / 1001, 24.0, 50.0, 60000 / 1001)}


def limit_problem(uid: str, g: Geometry) -> str | None:
    """Why frames of this geometry cannot be encoded in syntax `uid` (None when they fit)."""
    uid = base_syntax(uid)
    if uid == MPEG2MPML:
        if g.width > 720 or g.height > 576 or g.fps > 30.0001 or g.width * g.height * g.fps > 10_368_000 * 1.0001:
            return f"{g.width}x{g.height} at {g.fps:.3g} fps exceeds MPEG-2 Main Profile @ Main Level (720x576 at 25, 720x480 at 30)"
        return None
    if uid == MPEG2MPHL:
        if g.width > 1920 or g.height > 1152 or g.fps > 60.0001 or g.width * g.height * g.fps > 62_668_800 * 1.0001:
            return f"{g.width}x{g.height} at {g.fps:.3g} fps exceeds MPEG-2 Main Profile @ High Level"
        return None
    if uid == MPEG4HP41:
        return _h264_level(g, 8192, 245_760, "H.264 level 4.1")
    if uid == MPEG4HP41BD:
        rates = _BD_FORMATS.get((g.width, g.height))
        if rates is None or not any(abs(g.fps - r) < 0.01 for r in rates):
            return f"{g.width}x{g.height} at {g.fps:.3g} fps is not a Blu-ray progressive format"
        return None
    if uid in (MPEG4HP422D, MPEG4HP423D, MPEG4HP42STEREO):
        return _h264_level(g, 8704, 522_240, "H.264 level 4.2")
    if uid in (HEVCMP51, HEVCM10P51):
        if g.width * g.height > 8_912_896 or max(g.width, g.height) > 8444:
            return f"{g.width}x{g.height} exceeds the picture size of HEVC level 5.1"
        if g.width * g.height * g.fps > 534_773_760 * 1.0001:
            return f"{g.width}x{g.height} at {g.fps:.3g} fps exceeds the sample rate of HEVC level 5.1"
        return None
    return f"{syntax_name(uid)} is not a video transfer syntax"


# What to try, in order, for each request; the first one whose limits fit is used.
_CHAINS = {
    "mpeg2": (MPEG2MPML, MPEG2MPHL, MPEG4HP41, MPEG4HP422D, HEVCMP51),
    "h264": (MPEG4HP41, MPEG4HP422D, HEVCMP51),
    "hevc": (HEVCMP51,),
}

_NOT_ENCODABLE = {
    MPEG4HP42STEREO: "H.264 Stereo High Profile cannot be encoded here (no MVC encoder)",
    MPEG4HP423D: "frame-packed 3D H.264 is not re-signalled here",
}


def _same_chain(uid: UID) -> tuple[UID, ...]:
    uid = base_syntax(uid)
    if uid == MPEG2MPML:
        return _CHAINS["mpeg2"]
    if uid == MPEG2MPHL:
        return (MPEG2MPHL, MPEG4HP41, MPEG4HP422D, HEVCMP51)
    if uid == MPEG4HP41BD:
        return (MPEG4HP41BD, MPEG4HP41, MPEG4HP422D, HEVCMP51)
    if uid == MPEG4HP41:
        return _CHAINS["h264"]
    if uid in (MPEG4HP422D, MPEG4HP423D, MPEG4HP42STEREO):
        return (MPEG4HP422D, HEVCMP51)
    if uid == HEVCM10P51:
        return (HEVCM10P51, HEVCMP51)
    return (HEVCMP51,)


@dataclass(frozen=True)
class Choice:
    """The syntax chosen for writing, and why it differs from the request (None if it does not)."""

    uid: UID
    reason: str | None = None


def choose_video_syntax(requested: str, source_syntax: str | None, g: Geometry) -> Choice:
    """Pick an MPEG-family syntax for `requested` ('same', 'mpeg2', 'h264', 'hevc' or a UID)."""
    if requested in _CHAINS:
        chain = _CHAINS[requested]
        wanted = chain[0]
    else:
        wanted = UID(requested if requested != "same" else (source_syntax or ""))
        if family(wanted) is None:
            raise ValueError(f"{wanted} is not a video transfer syntax")
        chain = _same_chain(wanted)
    reasons: list[str] = []
    if base_syntax(wanted) in _NOT_ENCODABLE:
        reasons.append(_NOT_ENCODABLE[base_syntax(wanted)])
    for uid in chain:
        problem = limit_problem(uid, g)
        if problem is None:
            if uid == base_syntax(wanted) and not reasons:
                # Keep the fragmentable form when that is what was asked for.
                return Choice(UID(wanted))
            return Choice(uid, "; ".join(reasons) or None)
        reasons.append(problem)
    raise VideoError(None, "no video transfer syntax fits: " + "; ".join(reasons))


# Still-image codecs: what each source syntax is written back as, and why when it changes.
_PIXEL_TARGETS: dict[str, tuple[UID, str | None]] = {
    ImplicitVRLittleEndian: (ImplicitVRLittleEndian, None),
    ExplicitVRLittleEndian: (ExplicitVRLittleEndian, None),
    DeflatedExplicitVRLittleEndian: (ExplicitVRLittleEndian, "deflate is not written; native explicit VR little endian instead"),
    ExplicitVRBigEndian: (ExplicitVRLittleEndian, "big endian is retired; native explicit VR little endian instead"),
    JPEGBaseline8Bit: (JPEGBaseline8Bit, None),
    JPEGExtended12Bit: (JPEGLSLossless, "no JPEG Extended encoder; closest lossless: JPEG-LS lossless"),
    JPEGLossless: (JPEGLSLossless, "no JPEG Lossless encoder; closest lossless: JPEG-LS lossless"),
    JPEGLosslessSV1: (JPEGLSLossless, "no JPEG Lossless encoder; closest lossless: JPEG-LS lossless"),
    JPEGLSLossless: (JPEGLSLossless, None),
    JPEGLSNearLossless: (JPEGLSNearLossless, None),
    JPEG2000Lossless: (JPEG2000Lossless, None),
    JPEG2000: (JPEG2000, None),
    HTJ2KLossless: (JPEG2000Lossless, "no HTJ2K encoder; closest lossless: JPEG 2000 lossless"),
    HTJ2KLosslessRPCL: (JPEG2000Lossless, "no HTJ2K encoder; closest lossless: JPEG 2000 lossless"),
    HTJ2K: (JPEG2000Lossless, "no HTJ2K encoder; closest lossless: JPEG 2000 lossless"),
    RLELossless: (RLELossless, None),
}

PIXEL_WRITABLE = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLSLossless,
     JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless}
)

_ALIASES = {
    "native": ExplicitVRLittleEndian, "explicit": ExplicitVRLittleEndian, "rle": RLELossless,
    "jpeg": JPEGBaseline8Bit, "jpeg-ls": JPEGLSLossless, "jpegls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless, "j2k": JPEG2000Lossless,
}


def choose_pixel_syntax(requested: str, source_syntax: str | None) -> Choice:
    """Target for a still-image (frame by frame) syntax request."""
    if requested == "same":
        found = _PIXEL_TARGETS.get(source_syntax or "")
        if found is None:
            return Choice(ExplicitVRLittleEndian, f"no encoder for {syntax_name(source_syntax or '?')}; native instead")
        return Choice(found[0], found[1])
    uid = _ALIASES[requested] if requested in _ALIASES else UID(requested)
    if uid in PIXEL_WRITABLE:
        return Choice(UID(uid))
    found = _PIXEL_TARGETS.get(uid)
    if found is None:
        raise ValueError(f"{requested} is not a transfer syntax this tool can write")
    return Choice(found[0], found[1])


def is_video_request(requested: str, source_syntax: str | None) -> bool:
    """True when the request resolves to the MPEG family (encoded with PyAV)."""
    if requested in _CHAINS:
        return True
    if requested == "same":
        return family(source_syntax or "") is not None
    return family(_ALIASES.get(requested, requested)) is not None
