"""What a reader knows about a video instance before decoding it: VideoInfo and frame timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

FRAME_TIME = Tag(0x0018, 0x1063)
FRAME_TIME_VECTOR = Tag(0x0018, 0x1065)

# Frame rates a camera really uses; a frame time that rounds to one of these is taken as exact
# (33.367 ms is 30000/1001 fps, not 29.97002...).
_STANDARD_RATES = (
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(50), Fraction(60000, 1001), Fraction(60), Fraction(15), Fraction(10), Fraction(12.5),
    Fraction(120), Fraction(100), Fraction(5), Fraction(1),
)


@dataclass
class VideoInfo:
    """Header facts about one video-bearing instance; the frames themselves come from the reader.

    `frames` is NumberOfFrames (the reader checks it against what it decodes). Timing is the
    header's: `frame_time_ms` (FrameTime) or `frame_time_vector` (FrameTimeVector, first value
    0), with `fps` derived from them (or from CineRate, or the stream, when both are absent).
    """

    frames: int
    fps: float
    frame_time_ms: float | None
    rows: int
    columns: int
    transfer_syntax: str
    photometric: str
    samples_per_pixel: int = 3
    bits_stored: int = 8
    frame_time_vector: tuple[float, ...] | None = None
    timing_from_header: bool = True
    has_audio: bool = False
    container: str | None = None      # 'es', 'mp4', 'mpeg-ps', 'mpeg-ts' for the MPEG family
    codec: str | None = None          # 'mpeg2video', 'h264', 'hevc' (FFmpeg decoder names)
    profile: str | None = None
    pix_fmt: str | None = None
    colorspace: int | None = None     # AVColorSpace of the stream (matrix coefficients)
    color_range: int | None = None    # AVColorRange of the stream (1 limited, 2 full)
    fragments: int = 0                # Pixel Data items after the basic offset table
    stream_bytes: int = 0             # bytes in those items (encapsulated data)
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = field(default=None, repr=False)
    lossy: bool = False               # LossyImageCompression "01" or a lossy syntax
    name: str = "<dataset>"           # file name for messages (never a patient attribute)
    origin: Any = field(default=None, repr=False, compare=False)  # path or Dataset, for audio

    @property
    def rate(self) -> Fraction:
        """The constant frame rate as an exact fraction (standard rates snapped)."""
        return exact_rate(self.fps)

    @property
    def variable_timing(self) -> bool:
        """True when FrameTimeVector holds increments that are not all equal."""
        vec = self.frame_time_vector
        if not vec or len(vec) < 3:
            return False
        steps = vec[1:]
        return max(steps) - min(steps) > 1e-3 * max(1.0, max(steps))

    def pts_ms(self) -> list[float] | None:
        """Presentation time of each frame in ms when the timing is variable."""
        if not self.frame_time_vector:
            return None
        out, total = [], 0.0
        for i, step in enumerate(self.frame_time_vector):
            total += step if i else 0.0
            out.append(total)
        return out

    def summary(self) -> dict[str, Any]:
        """PHI-free description for reports and logs."""
        return {
            "frames": self.frames, "fps": round(self.fps, 4), "rows": self.rows,
            "columns": self.columns, "transfer_syntax": self.transfer_syntax,
            "photometric": self.photometric, "container": self.container, "codec": self.codec,
            "variable_timing": self.variable_timing, "has_audio": self.has_audio,
            "fragments": self.fragments,
        }


def exact_rate(fps: float) -> Fraction:
    """A frame rate as a small exact fraction, snapping to the standard camera rates."""
    for rate in _STANDARD_RATES:
        if abs(float(rate) - fps) < 0.0015 * max(1.0, fps / 30):
            return rate
    return Fraction(fps).limit_denominator(1001)


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 else None


def header_timing(ds: Dataset) -> tuple[float | None, tuple[float, ...] | None, float | None]:
    """(frame time ms, frame time vector, fps) from the Cine and Multi-frame attributes."""
    frame_time = _float(ds.get("FrameTime"))
    vector = None
    raw_vec = ds.get("FrameTimeVector")
    if raw_vec is not None and raw_vec != "":
        items = raw_vec if isinstance(raw_vec, MultiValue | list | tuple) else [raw_vec]
        values = [float(v) for v in items]
        if len(values) > 1:
            vector = tuple(values)
    fps = None
    if frame_time:
        fps = 1000.0 / frame_time
    elif vector:
        steps = [v for v in vector[1:] if v > 0]
        if steps:
            fps = 1000.0 * len(steps) / sum(steps)
    if fps is None:
        for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
            rate = _float(ds.get(keyword))
            if rate:
                fps = rate
                break
    return frame_time, vector, fps


def number_of_frames(ds: Dataset) -> int | None:
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
