"""Plain image and video files in and out, for `dicom-deid faces` (DICOM goes through
dicom_deid.video).

Videos are decoded and encoded with PyAV. Every frame is kept, in order, at the input's frame
rate (a variable-rate input is written at its average rate). What is written per input
container:

| input              | output container | video codec                          |
|--------------------|------------------|--------------------------------------|
| .mp4 .m4v .mov     | same (MP4/QuickTime) | H.264 (libx264, CRF 18, yuv420p) |
| .mkv               | Matroska         | H.264                                |
| .avi               | AVI              | H.264                                |
| .mpg .mpeg         | MPEG program stream | MPEG-2 video (about 1 bit/pixel)  |

MPEG program streams are kept as MPEG-2 because H.264 in a program stream plays in few
tools. Audio, subtitles and container metadata (titles, comments, creation time, location)
are not copied: a voice or a tag can identify the patient as well as a face can.
Images (png, jpg, jpeg, bmp, tif, tiff) are read as 8-bit RGB and written in their own
format without metadata. Every output is written to a temporary file beside the target and
renamed when complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dicom_deid.atomic import publish, temp_beside, write_atomic
from dicom_deid.errors import DeidError
from dicom_deid.overlap import DEFAULT_DEPTH, BackgroundConsumer
from dicom_deid.overlap import prefetch as overlap_prefetch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_FORMATS = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".avi": ("avi", "libx264"),
    ".mpg": ("mpeg", "mpeg2video"),
    ".mpeg": ("mpeg", "mpeg2video"),
}
VIDEO_SUFFIXES = tuple(VIDEO_FORMATS)


class MediaError(DeidError, ValueError):
    """An input or output file that cannot be read or written, with the reason."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int | None     # as declared by the container; None when it does not say
    fps: Fraction
    width: int
    height: int
    codec: str


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


# -- images ---------------------------------------------------------------------------------

def read_image(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise MediaError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: Path, rgb: np.ndarray) -> None:
    import cv2

    suffix = path.suffix.lower()
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise MediaError(f"{path}: cannot encode the image as {suffix}")
    write_atomic(encoded.tobytes(), path, durable=False, public=True)


# -- videos ---------------------------------------------------------------------------------

def probe_video(path: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or rate <= 0:
                raise MediaError(f"{path}: the video does not declare a frame rate")
            return VideoInfo(
                frames=int(stream.frames) or None,
                fps=Fraction(rate),
                width=int(stream.codec_context.width),
                height=int(stream.codec_context.height),
                codec=stream.codec_context.name,
            )
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable video ({exc})") from exc


def read_video(path: Path, prefetch: int = DEFAULT_DEPTH) -> Generator[np.ndarray, None, None]:
    """RGB frames of the first video stream, in decoding order, with bounded memory.

    With prefetch > 0 the frames are decoded and converted in a background thread, at most
    that many ahead, so that decoding overlaps the caller's work (dicom_deid.overlap); 0
    decodes in the caller's thread.
    """
    if prefetch > 0:
        return overlap_prefetch(_decode_video(path), depth=prefetch, name="read_video")
    return _decode_video(path)


def _decode_video(path: Path) -> Generator[np.ndarray, None, None]:
    import av
    from av.video.reformatter import VideoReformatter

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            # One converter for the stream: swscale's context is set up once, not per frame.
            reformatter = VideoReformatter()
            for frame in container.decode(stream):
                yield reformatter.reformat(frame, format="rgb24").to_ndarray()
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: decoding failed ({exc})") from exc


class VideoWriter:
    """Encode RGB frames to `path` (container and codec from its suffix; see module doc).

    Frames are encoded in a background thread (dicom_deid.overlap.BackgroundConsumer), at
    most `depth` behind `write`, so that encoding overlaps the caller's next frame; `write`
    copies the frame, so the caller may reuse its array. An encoder error is raised by a
    later `write` or by `finish`. Every writer must end in `finish` or `abort`, which join
    the thread; only `finish` publishes the file.
    """

    def __init__(self, path: Path, info: VideoInfo, depth: int = DEFAULT_DEPTH) -> None:
        import av

        suffix = path.suffix.lower()
        if suffix not in VIDEO_FORMATS:
            raise MediaError(f"{path}: cannot write video as {suffix or 'no suffix'}")
        self.format, codec = VIDEO_FORMATS[suffix]
        self.path = path
        self.frames = 0
        self._tmp = temp_beside(path)
        try:
            self._container = av.open(str(self._tmp), mode="w", format=self.format)
            stream = self._container.add_stream(codec, rate=info.fps)
            stream.width, stream.height = info.width, info.height  # type: ignore[union-attr]
            if codec == "libx264":
                odd = info.width % 2 or info.height % 2
                # 4:2:0 needs even sides; an odd-sized input keeps its size in 4:4:4.
                stream.pix_fmt = "yuv444p" if odd else "yuv420p"  # type: ignore[union-attr]
                stream.options = {"crf": "18", "preset": "medium"}
            else:
                if info.width % 2 or info.height % 2:
                    raise MediaError(f"{path}: MPEG-2 cannot hold an odd frame size")
                stream.pix_fmt = "yuv420p"  # type: ignore[union-attr]
                # About one bit per pixel: visually transparent MPEG-2 at SD sizes.
                stream.bit_rate = max(4_000_000, int(info.width * info.height * float(info.fps)))  # type: ignore[union-attr]
            # Kept apart: the muxer may change the stream's time base once it writes its
            # header (MPEG-PS switches to 90 kHz), while frames count in 1/fps.
            self._time_base = Fraction(1, 1) / info.fps
            stream.time_base = self._time_base
            self._stream = stream
            self._encoder: BackgroundConsumer[av.VideoFrame] = BackgroundConsumer(
                self._encode, depth=depth, name="VideoWriter")
        except Exception:
            self._discard()
            raise

    def write(self, rgb: np.ndarray) -> None:
        import av

        # from_ndarray copies the pixels: the encoder thread never sees the caller's array.
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = self._time_base
        self._encoder.put(frame)
        self.frames += 1

    def _encode(self, frame: object) -> None:
        # Runs in the encoder thread, the only one that touches the stream until it is joined.
        for packet in self._stream.encode(frame):  # type: ignore[arg-type, union-attr]
            self._container.mux(packet)

    def finish(self) -> None:
        try:
            self._encoder.close()
            for packet in self._stream.encode():  # type: ignore[union-attr]
                self._container.mux(packet)
            self._container.close()
        except Exception:
            self._discard()
            raise
        publish(self._tmp, self.path, durable=False, public=True)

    def abort(self) -> None:
        self._discard()

    def _discard(self) -> None:
        encoder = getattr(self, "_encoder", None)
        if encoder is not None:
            # Joined before the container is closed under it.
            encoder.abort()
        container = getattr(self, "_container", None)
        if container is not None:
            # Closing a half-written file may fail; it is deleted anyway.
            with contextlib.suppress(Exception):
                container.close()
        self._tmp.unlink(missing_ok=True)
