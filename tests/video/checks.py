"""Checks shared by the video tests: frame-by-frame fidelity, timing, and the PS3.5 8.2 layout.

The Pixel Data items are parsed here independently of dicom_deid.video.pixeldata, and MPEG
streams are opened with PyAV directly, so a bug in the reader cannot hide a bug in the writer.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import av
import numpy as np
from pydicom import dcmread
from pydicom.multival import MultiValue

from dicom_deid.video import open_frames
from dicom_deid.video.quality import luma_psnr

TIMING_KEYWORDS = (
    "NumberOfFrames", "FrameTime", "FrameTimeVector", "FrameIncrementPointer", "CineRate",
    "RecommendedDisplayFrameRate", "StartTrim", "StopTrim", "ActualFrameDuration",
    "FrameDelay", "PreferredPlaybackSequencing",
)


def timing(path: Path) -> dict[str, object]:
    """The Cine and Multi-frame attributes, as values comparable across files."""
    ds = dcmread(path, stop_before_pixels=True)
    out: dict[str, object] = {}
    for keyword in TIMING_KEYWORDS:
        if keyword not in ds:
            continue
        value = ds[keyword].value
        if keyword == "FrameTime":
            out[keyword] = round(float(value), 3)
        elif keyword == "FrameTimeVector":
            values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
            out[keyword] = tuple(round(float(v), 3) for v in values)
        else:
            out[keyword] = str(value)
    return out


def compare_frames(original: Path, written: Path) -> tuple[int, int, float]:
    """(frames in original, frames in written, minimum luma PSNR), streaming both files.

    The written frames may be padded to even sizes (4:2:0); only the original area is compared.
    """
    worst = math.inf
    count_a = count_b = 0
    with open_frames(original) as ra, open_frames(written) as rb:
        it_b = iter(rb)
        for a in ra:
            count_a += 1
            b = next(it_b, None)
            if b is None:
                continue
            count_b += 1
            worst = min(worst, luma_psnr(a, b[: a.shape[0], : a.shape[1]]))
        count_b += sum(1 for _ in it_b)
    return count_a, count_b, worst


def frames_of(path: Path) -> list[np.ndarray]:
    with open_frames(path) as reader:
        return list(reader)


def pixel_items(path: Path) -> tuple[bytes, list[bytes]]:
    """(basic offset table, fragments) of an encapsulated Pixel Data value, parsed by hand."""
    ds = dcmread(path)
    data = ds.PixelData
    pos, items = 0, []
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack("<HHL", data[pos : pos + 8])
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        assert (group, elem) == (0xFFFE, 0xE000), f"item tag expected at {pos}"
        items.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return items[0], items[1:]


def stream_facts(path: Path) -> dict[str, object]:
    """What PyAV itself sees in the stream of an MPEG-family instance."""
    _, fragments = pixel_items(path)
    stream = b"".join(fragments)
    with av.open(io.BytesIO(stream)) as container:
        video = container.streams.video[0]
        facts: dict[str, object] = {
            "codec": video.codec_context.name,
            "profile": video.codec_context.profile,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "audio_streams": len(container.streams.audio),
            "format": container.format.name,
        }
        pts, count = [], 0
        for frame in container.decode(video):
            count += 1
            if frame.pts is not None and frame.time_base is not None:
                pts.append(float(frame.pts * frame.time_base) * 1000.0)
        facts["frames"] = count
        facts["pts_ms"] = pts  # empty for elementary streams, which carry no timestamps
    return facts
