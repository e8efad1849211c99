"""read_video converts every frame with one swscale context for the whole stream: the pixels
must be exactly PyAV's own per-frame conversion (frame.to_ndarray)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dicom_deid.faces.media import VideoInfo, VideoWriter, read_video


def _frames(count: int = 6, size: tuple[int, int] = (176, 144)) -> list[np.ndarray]:
    """Gradients with noise and a moving saturated block: every filter tap and rounding."""
    w, h = size
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(count):
        rgb = np.stack([(xx * 255 // w + 9 * i) % 256, (yy * 255 // h) % 256,
                        ((xx + yy + 13 * i) * 3) % 256], axis=2).astype(np.int32)
        rgb += rng.integers(-20, 21, rgb.shape)
        rgb[20:60, 30 + i:90 + i] = (250, 10, 40)
        out.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return out


def test_read_video_equals_pyav_per_frame_conversion(tmp_path: Path) -> None:
    frames = _frames()
    h, w = frames[0].shape[:2]
    path = tmp_path / "clip.mp4"
    writer = VideoWriter(path, VideoInfo(len(frames), Fraction(25), w, h, "h264"))
    for rgb in frames:
        writer.write(rgb)
    writer.finish()
    ours = list(read_video(path, prefetch=0))
    with av.open(str(path)) as container:
        plain = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(ours) == len(plain) == len(frames)
    for a, b in zip(ours, plain, strict=True):
        assert np.array_equal(a, b)
