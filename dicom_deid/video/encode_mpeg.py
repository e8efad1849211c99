"""Encode RGB frames to an MPEG-2, H.264 or HEVC stream file with PyAV (FFmpeg's encoders).

Settings keep each stream inside its DICOM syntax: profile and level are set explicitly and the
VBV is capped at the level's bit rate. Quality is one number whose meaning is the codec's own:
CRF for libx264 and libx265 (lower is better), the quantiser scale for mpeg2video (1 to 31,
lower is better). The defaults were chosen so that re-encoding already compressed video gives
a luma PSNR of 40 dB or more (see benchmarks/transcode.py and tests/video).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter
from pydicom.uid import (
    HEVCM10P51,
    MPEG2MPHL,
    MPEG4HP41,
    MPEG4HP41BD,
)

from dicom_deid.overlap import BackgroundConsumer
from dicom_deid.video.avframe import rgb_frame
from dicom_deid.video.errors import VideoError
from dicom_deid.video.syntaxes import base_syntax, family

log = logging.getLogger(__name__)

# Box-filtered chroma with accurate rounding: the counterpart of the reader's conversion.
_YUV_FLAGS = Interpolation.AREA | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INP

DEFAULT_QUALITY = {"h264": 12, "hevc": 10, "mpeg2": 2}
QUALITY_RANGE = {"h264": (0, 51), "hevc": (0, 51), "mpeg2": (1, 31)}
# veryfast against fast (measured, CRF 12/10): x264 twice the speed at 720p for about 1 dB less
# PSNR and no larger streams; x265 1.4x the speed at the same PSNR.
X264_PRESET = "veryfast"
X265_PRESET = "veryfast"

_MUXER = {("mpeg2", "es"): "mpeg2video", ("h264", "es"): "h264", ("hevc", "es"): "hevc",
          ("mpeg2", "mpeg-ps"): "vob", ("mpeg2", "mpeg-ts"): "mpegts", ("h264", "mpeg-ts"): "mpegts",
          ("hevc", "mpeg-ts"): "mpegts", ("h264", "mp4"): "mp4", ("hevc", "mp4"): "mp4"}

# MPEG-2 can code only these rates, times (n+1)/(d+1) with n < 4, d < 32 (13818-2 6.3.3).
_MPEG2_BASE = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
               Fraction(50), Fraction(60000, 1001), Fraction(60))


def mpeg2_rate(rate: Fraction) -> Fraction:
    """The MPEG-2 codable frame rate nearest to `rate` (the rate itself when codable)."""
    best, best_err = _MPEG2_BASE[2], float("inf")
    for base in _MPEG2_BASE:
        for n in range(4):
            for d in range(32):
                cand = base * Fraction(n + 1, d + 1)
                err = abs(float(cand - rate))
                if err < best_err:
                    best, best_err = cand, err
    return best


def quality_for(fam: str, quality: float | None) -> float:
    if quality is None:
        return DEFAULT_QUALITY[fam]
    low, high = QUALITY_RANGE[fam]
    if not low <= quality <= high:
        raise ValueError(f"quality {quality} is outside {low}..{high} for {fam}")
    return quality


@dataclass
class EncodeResult:
    frames: int
    stream_bytes: int
    codec: str
    options: dict[str, str]
    stream_rate: Fraction
    notes: list[str] = field(default_factory=list)


class MpegEncoder:
    """Feed RGB frames one by one; `close()` flushes the encoder (no frame is dropped)."""

    def __init__(
        self,
        path: Path,
        syntax: str,
        width: int,
        height: int,
        rate: Fraction,
        container: str,
        quality: float | None = None,
        pts_ms: list[float] | None = None,
        colorspace: int | None = None,
        color_range: int | None = None,
        name: str = "<output>",
    ) -> None:
        self.path = path
        self.name = name
        self.syntax = base_syntax(syntax)
        fam = family(syntax)
        if fam is None:
            raise ValueError(f"{syntax} is not an MPEG-family syntax")
        self.family = fam
        self.width, self.height = width, height
        self.notes: list[str] = []
        self.quality = quality_for(fam, quality)
        muxer = _MUXER.get((fam, container))
        if muxer is None:
            raise ValueError(f"{fam} cannot be written in a {container} container")
        self.container_kind = container
        stream_rate = rate
        if fam == "mpeg2":
            stream_rate = mpeg2_rate(rate)
            if stream_rate != rate:
                self.notes.append(
                    f"MPEG-2 cannot code {float(rate):.4g} fps; the stream says {float(stream_rate):.4g} fps "
                    "(the DICOM timing attributes keep the true timing)"
                )
        self.stream_rate = stream_rate
        self._pts_ticks: list[int] | None = None
        if pts_ms is not None and container in ("mp4", "mpeg-ts", "mpeg-ps"):
            self._pts_ticks = [round(t * 90) for t in pts_ms]  # 90 kHz, the MPEG systems clock
            if any(b <= a for a, b in zip(self._pts_ticks, self._pts_ticks[1:], strict=False)):
                raise VideoError(name, "FrameTimeVector is not strictly increasing")
        self._colorspace = colorspace if colorspace not in (None, 0) else 2
        self._color_range = color_range if color_range in (1, 2) else 1
        self.options = self._options()
        self.codec_name = {"mpeg2": "mpeg2video", "h264": "libx264", "hevc": "libx265"}[fam]
        self.pix_fmt = "yuv420p10le" if self.syntax == HEVCM10P51 else "yuv420p"
        container_options = {"movflags": "+faststart"} if muxer == "mp4" else {}
        try:
            self._out = av.open(str(path), mode="w", format=muxer, options=container_options)
            self._stream = self._out.add_stream(self.codec_name, rate=stream_rate, options=self.options)
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(name, f"cannot start the {self.codec_name} encoder ({exc})") from exc
        cc = self._stream.codec_context
        cc.width, cc.height, cc.pix_fmt = width, height, self.pix_fmt  # type: ignore[union-attr]
        if self._pts_ticks is not None:
            cc.time_base = Fraction(1, 90000)
            self._stream.time_base = Fraction(1, 90000)
        else:
            cc.time_base = 1 / stream_rate
        if self._colorspace != 2:
            cc.colorspace = self._colorspace  # type: ignore[union-attr]
        cc.color_range = self._color_range  # type: ignore[union-attr]
        if fam == "mpeg2":
            cc.max_b_frames = 2  # type: ignore[union-attr]
            cc.gop_size = 15  # type: ignore[union-attr]
        cc.thread_type = "AUTO"
        self._reformatter = VideoReformatter()
        self.frames = 0        # frames handed to encode()
        self._encoded = 0      # frames the encoder thread has sent to the codec
        # Colour conversion and encoding run in a background thread, a few frames behind
        # encode(), so that they overlap the caller's work on the next frame (the face stage).
        self._worker: BackgroundConsumer[av.VideoFrame] = BackgroundConsumer(
            self._encode_frame, name="MpegEncoder")

    def _options(self) -> dict[str, str]:
        q = self.quality
        if self.family == "h264":
            level = "4.1" if self.syntax in (MPEG4HP41, MPEG4HP41BD) else "4.2"
            opts = {"crf": f"{q:g}", "preset": X264_PRESET, "tune": "psnr", "profile": "high",
                    "level": level, "maxrate": "50000k", "bufsize": "62500k"}
            params: list[str] = []
            if self.syntax == MPEG4HP41BD:
                # Blu-ray constraints (x264 --bluray-compat): 1 s GOPs, 4 slices, HRD signalled.
                fps = float(self.stream_rate)
                params += ["bluray-compat=1", f"keyint={round(fps)}", "slices=4", "nal-hrd=vbr",
                           "b-pyramid=strict", f"ref={4 if self.height >= 1080 else 6}"]
                opts["maxrate"], opts["bufsize"] = "40000k", "30000k"
                if self.height >= 1080 and round(fps) in (25, 30):
                    params += ["fake-interlaced=1", "pic-struct=1"]
            if params:
                opts["x264-params"] = ":".join(params)
            return opts
        if self.family == "hevc":
            params = "log-level=error:level-idc=51:high-tier=0:vbv-maxrate=40000:vbv-bufsize=40000"  # type: ignore[assignment]
            opts = {"crf": f"{q:g}", "preset": X265_PRESET, "x265-params": params}  # type: ignore[dict-item]
            opts["profile"] = "main10" if self.syntax == HEVCM10P51 else "main"
            return opts
        high = self.syntax == MPEG2MPHL
        return {"qmin": f"{int(q)}", "qmax": f"{int(q)}", "profile": "4", "level": "4" if high else "8",
                "maxrate": "80000000" if high else "15000000",
                "bufsize": "9781248" if high else "1835008"}

    def encode(self, rgb: np.ndarray) -> None:
        """Queue one frame; an error of an earlier frame's encoding is raised here or by close."""
        if self._pts_ticks is not None and self.frames >= len(self._pts_ticks):
            raise VideoError(self.name, f"more frames than FrameTimeVector has values ({len(self._pts_ticks)})")
        # A copy of the pixels, so the caller may reuse or change its array.
        frame = rgb_frame(rgb)
        frame.pts = self._pts_ticks[self.frames] if self._pts_ticks is not None else self.frames
        self._worker.put(frame)
        self.frames += 1

    def _encode_frame(self, frame: av.VideoFrame) -> None:
        # Runs in the worker thread, the only one that touches the reformatter, the stream
        # and the container until the worker is joined.
        pts = frame.pts
        frame = self._reformatter.reformat(
            frame, format=self.pix_fmt, dst_colorspace=self._colorspace,
            dst_color_range=self._color_range, interpolation=_YUV_FLAGS,
        )
        frame.pts = pts
        self._encoded += 1
        self._mux(frame)

    def _mux(self, frame: av.VideoFrame | None) -> None:
        try:
            packets = self._stream.encode(frame)  # type: ignore[arg-type, union-attr]
            if packets:
                self._out.mux(packets)
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(self.name, f"{self.codec_name} failed at frame {self._encoded} ({exc})") from exc

    def close(self) -> EncodeResult:
        """Encode what is queued, flush the encoder and finish the file."""
        self._worker.close()
        self._mux(None)
        try:
            self._out.close()
        except av.error.FFmpegError as exc:
            raise VideoError(self.name, f"cannot finish the {self.container_kind} stream ({exc})") from exc
        size = self.path.stat().st_size
        return EncodeResult(self.frames, size, self.codec_name, dict(self.options), self.stream_rate, list(self.notes))

    def abort(self) -> None:
        # Abandoning a failed encode: the file is deleted with its folder anyway. The worker
        # is joined first: the container must not be closed under a running encode.
        self._worker.abort()
        with contextlib.suppress(Exception):
            self._out.close()
