"""The colour conversions run with one swscale thread (SWS_THREADS) instead of PyAV's default
of one per core, to spare a busy machine the slice threads' wake-ups: the pixels must be
exactly those of the default, in both directions and on both video paths."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from dicom_deid.faces.media import VideoInfo, VideoWriter, read_video
from dicom_deid.video.decode_mpeg import RGB_FLAGS, SWS_THREADS, to_rgb
from dicom_deid.video.encode_mpeg import _YUV_FLAGS


def _frames(count: int = 4, size: tuple[int, int] = (176, 144)) -> list[np.ndarray]:
    """Smooth gradients with noise and a sharp block: exercise every filter tap and rounding."""
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


def test_sws_threads_is_one() -> None:
    assert SWS_THREADS == 1


def test_yuv_to_rgb_and_back_equal_the_default_thread_count() -> None:
    for rgb in _frames():
        yuv_default = VideoReformatter().reformat(
            av.VideoFrame.from_ndarray(rgb, format="rgb24"), format="yuv420p",
            dst_colorspace=1, dst_color_range=1, interpolation=_YUV_FLAGS)
        yuv_one = VideoReformatter().reformat(
            av.VideoFrame.from_ndarray(rgb, format="rgb24"), format="yuv420p",
            dst_colorspace=1, dst_color_range=1, interpolation=_YUV_FLAGS, threads=SWS_THREADS)
        assert np.array_equal(yuv_one.to_ndarray(), yuv_default.to_ndarray())
        back_default = VideoReformatter().reformat(
            yuv_default, format="rgb24", interpolation=RGB_FLAGS).to_ndarray()
        assert np.array_equal(to_rgb(yuv_default), back_default)


def test_mp4_reader_and_writer_equal_pyav_defaults(tmp_path: Path) -> None:
    frames = _frames(6)
    h, w = frames[0].shape[:2]
    ours = tmp_path / "ours.mp4"
    writer = VideoWriter(ours, VideoInfo(len(frames), Fraction(25), w, h, "h264"))
    for rgb in frames:
        writer.write(rgb)
    writer.finish()
    # The same stream encoded with PyAV converting each frame itself (default threads).
    plain = tmp_path / "plain.mp4"
    with av.open(str(plain), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        stream.time_base = Fraction(1, 25)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    decoded_ours = list(read_video(ours, prefetch=0))
    with av.open(str(plain)) as container:
        decoded_plain = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded_ours) == len(decoded_plain) == len(frames)
    for a, b in zip(decoded_ours, decoded_plain, strict=True):
        assert np.array_equal(a, b)
