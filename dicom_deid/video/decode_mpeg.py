"""Decode an MPEG-2, H.264 or HEVC stream held in Pixel Data fragments, one frame at a time.

The fragments are concatenated by a seekable file-like view (never copied whole into memory) and
handed to PyAV. The container is recognised from the first bytes: an ISO BMFF (MP4) box, an
MPEG-2 transport or program stream, or a raw elementary stream, whose codec must agree with the
transfer syntax. Frames come out in presentation order; the decoder is flushed at the end so
that B-frames at the tail are not lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from dicom_deid.video.avlog import DecoderErrors
from dicom_deid.video.errors import VideoError
from dicom_deid.video.pixeldata import ConcatStream, PixelLayout
from dicom_deid.video.syntaxes import FAMILY_NAMES, family, syntax_name

_CODEC_FAMILY = {"mpeg2video": "mpeg2", "mpeg1video": "mpeg2", "h264": "h264", "hevc": "hevc"}

# PyAV demuxer for each container; raw elementary streams use the codec's own demuxer.
_ES_FORMAT = {"mpeg2": "mpegvideo", "h264": "h264", "hevc": "hevc"}
_CONTAINER_FORMAT = {"mp4": "mp4", "mpeg-ts": "mpegts", "mpeg-ps": "mpeg"}


@dataclass(frozen=True)
class Sniffed:
    container: str | None      # 'es', 'mp4', 'mpeg-ts', 'mpeg-ps' or None (unknown)
    family: str | None         # codec family of an elementary stream, when recognisable
    other: str | None = None   # a non-video payload recognised instead (JPEG, JPEG 2000)


def _first_start_code(head: bytes) -> int | None:
    idx = head.find(b"\x00\x00\x01")
    return idx if 0 <= idx < 64 else None


def sniff(head: bytes) -> Sniffed:
    """Recognise the container or elementary stream from the first bytes of the stream."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return Sniffed("mp4", None)
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return Sniffed("mpeg-ts", None)
    if head[:3] == b"\xff\xd8\xff":
        return Sniffed(None, None, "JPEG images")
    if head[:4] == b"\xff\x4f\xff\x51" or head[4:12] == b"jP  \r\n\x87\n":
        return Sniffed(None, None, "JPEG 2000 images")
    idx = _first_start_code(head)
    if idx is None or idx + 5 > len(head):
        return Sniffed(None, None)
    code = head[idx + 3]
    if code == 0xBA:
        return Sniffed("mpeg-ps", None)
    if code in (0xB3, 0xB5, 0xB8, 0x00, 0xB2):
        return Sniffed("es", "mpeg2")
    nal1 = head[idx + 4] if idx + 4 < len(head) else 0
    h264_type, h264_ref = code & 0x1F, (code >> 5) & 0x3
    hevc_type, hevc_tid = (code >> 1) & 0x3F, nal1 & 0x7
    forbidden = code & 0x80
    if forbidden:
        return Sniffed(None, None)
    hevc_ok = hevc_type in (32, 33, 34, 35, 39, 40, 16, 17, 18, 19, 20, 21) and hevc_tid >= 1 and (code & 1) == 0
    h264_ok = (h264_type in (9, 6) and h264_ref == 0) or (h264_type in (7, 8, 5) and h264_ref != 0) or h264_type == 1
    if hevc_ok and not h264_ok:
        return Sniffed("es", "hevc")
    if h264_ok and not hevc_ok:
        return Sniffed("es", "h264")
    if hevc_ok and h264_ok:
        # Both readings plausible (rare): the H.264 reading needs byte 2 to be a profile for SPS.
        return Sniffed("es", "h264" if h264_type == 7 and nal1 in (66, 77, 88, 100, 110, 122, 244) else "hevc")
    return Sniffed(None, None)


class MpegDecoder:
    """One pass over the frames of an MPEG-family stream (open, decode first frame, iterate)."""

    def __init__(self, layout: PixelLayout, syntax: str, name: str, strict: bool = True) -> None:
        self.name = name
        self.syntax = syntax
        self.strict = strict
        found_family = family(syntax)
        if found_family is None:
            raise VideoError(name, f"transfer syntax {syntax} is not MPEG-2, H.264 or HEVC video")
        self._family: str = found_family
        self._stream = ConcatStream(layout.opener, layout.items)
        if self._stream.size == 0:
            self._stream.close()
            raise VideoError(name, "Pixel Data holds no video stream (zero frames)")
        head = self._stream.read(4096)
        self._stream.seek(0)
        found = sniff(head)
        if found.other:
            self._fail(f"transfer syntax {syntax_name(syntax)} does not match the data: Pixel Data holds {found.other}")
        if found.family and found.family != self._family:
            self._fail(
                f"transfer syntax {syntax_name(syntax)} does not match the data: "
                f"Pixel Data holds a {FAMILY_NAMES[found.family]} elementary stream"
            )
        self.container_kind = found.container
        if found.container == "es" or found.container is None:
            fmt = _ES_FORMAT[self._family] if found.container == "es" else None
        else:
            fmt = _CONTAINER_FORMAT[found.container]
        self._watch = DecoderErrors().__enter__()
        try:
            self._container = av.open(self._stream, mode="r", format=fmt)
        except (av.error.FFmpegError, ValueError) as exc:
            self._close_quietly()
            raise VideoError(name, f"cannot read the {FAMILY_NAMES[self._family]} stream in Pixel Data ({exc})") from exc
        if not self._container.streams.video:
            self._close_quietly()
            raise VideoError(name, "Pixel Data holds no video stream")
        self._video = self._container.streams.video[0]
        codec = self._video.codec_context.name
        if _CODEC_FAMILY.get(codec) != self._family:
            self._close_quietly()
            raise VideoError(
                name, f"transfer syntax {syntax_name(syntax)} does not match the data: the stream is {codec}"
            )
        if self.container_kind is None:
            self.container_kind = "es" if self._container.format.name in _ES_FORMAT.values() else "other"
        # One decoding thread: while DecoderErrors watches, PyAV's log callback needs the GIL, and
        # an FFmpeg worker thread that logs while another thread holds the GIL and waits for it
        # (freeing a threaded decoder does exactly that) deadlocks the process (PyAV issue 751;
        # seen here as a hang in about one run in six of the transcode tests).
        self._video.codec_context.thread_count = 1
        self.has_audio = bool(self._container.streams.audio)
        self.codec = codec
        self.profile = self._video.codec_context.profile
        self.average_rate = self._video.average_rate or self._video.guessed_rate
        self._frames = self._decode()
        self.decoded = 0
        try:
            self.first = next(self._frames)
        except StopIteration:
            self._close_quietly()
            raise VideoError(name, "the video stream decodes to zero frames") from None
        except VideoError:
            self._close_quietly()
            raise

    # -- decoding ---------------------------------------------------------------------------
    def _fail(self, problem: str) -> None:
        self._close_quietly()
        raise VideoError(self.name, problem)

    def _decode(self) -> Iterator[av.VideoFrame]:
        try:
            for packet in self._container.demux(self._video):
                for frame in packet.decode():
                    self._check(frame)
                    yield frame
        except av.error.FFmpegError as exc:
            errors = self._watch.errors() if self._watch is not None else []
            detail = f"; FFmpeg: {errors[0]}" if errors else ""
            raise VideoError(
                self.name, f"the {FAMILY_NAMES[self._family]} stream is corrupt or truncated after frame {self.decoded} ({exc}){detail}"
            ) from exc
        errors = self._watch.errors() if self._watch is not None else []
        if self.strict and errors:
            raise VideoError(
                self.name, f"the {FAMILY_NAMES[self._family]} stream is damaged: {errors[0]}"
                + (f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else "")
            )

    def _check(self, frame: av.VideoFrame) -> None:
        self.decoded += 1
        if self.strict and frame.is_corrupt:
            raise VideoError(self.name, f"frame {self.decoded} of the stream is corrupt (damaged or truncated bitstream)")
        if self.strict and self._watch is not None:
            errors = self._watch.errors()
            if errors:
                raise VideoError(self.name, f"the {FAMILY_NAMES[self._family]} stream is damaged near frame {self.decoded}: {errors[0]}")

    def frames(self) -> Iterator[av.VideoFrame]:
        """All frames, the first one included; the caller checks the count."""
        try:
            yield self.first
            yield from self._frames
        finally:
            self.close()

    # -- cleanup ----------------------------------------------------------------------------
    def _close_quietly(self) -> None:
        # Cleanup after an error must not replace that error.
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            self._container = None  # type: ignore[assignment]
            container.close()
        watch = getattr(self, "_watch", None)
        if watch is not None:
            self._watch = None  # type: ignore[assignment]
            watch.__exit__(None, None, None)
        self._stream.close()


# swscale's default YUV->RGB path (nearest-neighbour chroma, low-precision coefficient tables)
# alone limits a YUV->RGB->YUV round trip to about 45.6 dB luma PSNR on a 720x576 H.264 clip;
# accurate rounding with full chroma interpolation raises that to about 61 dB. It is not free:
# at 720p it costs 6-7 CPU ms a frame against under 1 ms for the default SIMD path (2026-12-07,
# 2-core host), about a seventh of a DICOM transcode; the default path differs from it by up to
# 45 levels (44.8 dB) on the benchmark clip, too much to trade for the time.
RGB_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


def to_rgb(frame: av.VideoFrame, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB using the stream's own matrix and range (BT.601 limited when unsignalled).

    Pass one reformatter for a whole stream so that swscale's context is set up once.
    """
    rf = reformatter if reformatter is not None else VideoReformatter()
    return rf.reformat(frame, format="rgb24", interpolation=RGB_FLAGS).to_ndarray()
