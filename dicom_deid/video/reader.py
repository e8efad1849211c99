"""`open_frames`: stream RGB frames out of any video-bearing DICOM instance.

MPEG-2, H.264 and HEVC go through PyAV (decode_mpeg); every other syntax (native, JPEG family,
JPEG-LS, JPEG 2000, RLE) through pydicom's pixel handlers one frame at a time. Either way at most
a few frames are in memory, whatever the length of the video.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
from av.video.reformatter import VideoReformatter
from pydicom.dataset import Dataset

from dicom_deid.overlap import DEFAULT_DEPTH, prefetch
from dicom_deid.video.decode_mpeg import MpegDecoder, to_rgb
from dicom_deid.video.errors import VideoError
from dicom_deid.video.info import VideoInfo, header_timing, number_of_frames
from dicom_deid.video.pixeldata import PixelLayout, open_path_or_dataset
from dicom_deid.video.syntaxes import MPEG_SYNTAXES, NATIVE_SYNTAXES, family, syntax_name

_LOSSY_STILL = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203",
}


def has_video(ds: Dataset) -> bool:
    """True for multi-frame image data or an MPEG-family transfer syntax."""
    if "PixelData" not in ds and "Rows" not in ds:
        return False
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax in MPEG_SYNTAXES:
        return True
    frames = number_of_frames(ds)
    return frames is not None and frames > 1


def _syntax_of(ds: Dataset, name: str) -> str:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise VideoError(name, "no Transfer Syntax UID in the file meta information")
    return str(syntax)


class FrameReader:
    """Context manager over the frames of one instance; iterate for HxWx3 uint8 RGB arrays.

    `info` describes the instance. Iterating twice decodes twice (nothing is cached).
    Frames are decoded up to `prefetch` ahead in a background thread; `close` (or leaving the
    `with` block) stops and joins it.
    With strict=True (default) a frame count that differs from NumberOfFrames, a corrupt frame,
    or a decoder error raises VideoError instead of yielding damaged or missing frames.
    """

    def __init__(self, src: str | os.PathLike[str] | Dataset, strict: bool = True,
                 prefetch: int = DEFAULT_DEPTH) -> None:
        self.strict = strict
        self.prefetch = int(prefetch)
        self._prefetching: weakref.ref[Iterator[np.ndarray]] | None = None
        ds, layout, name, path = open_path_or_dataset(src)
        self._ds = ds
        self._layout: PixelLayout = layout
        self._name = name
        self._src: str | Dataset = str(path) if path is not None else ds
        self._mpeg: MpegDecoder | None = None
        self.decoded = 0
        syntax = _syntax_of(ds, name)
        frames = number_of_frames(ds)
        if frames is not None and frames <= 0:
            raise VideoError(name, f"NumberOfFrames is {frames}: zero frames")
        frame_time, vector, fps = header_timing(ds)
        timing_from_header = fps is not None
        lossy = str(ds.get("LossyImageCompression", "")) == "01" or syntax in _LOSSY_STILL or syntax in MPEG_SYNTAXES
        common = {
            "transfer_syntax": syntax,
            "frame_time_ms": frame_time,
            "frame_time_vector": vector,
            "sop_class_uid": str(ds.get("SOPClassUID", "")) or None,
            "sop_instance_uid": str(ds.get("SOPInstanceUID", "")) or None,
            "lossy": lossy,
            "name": name,
            "origin": self._src,
            "stream_bytes": layout.stream_length if layout.encapsulated else 0,
        }
        if vector is not None and frames is not None and len(vector) != frames:
            raise VideoError(name, f"FrameTimeVector has {len(vector)} values for {frames} frames")
        if syntax in MPEG_SYNTAXES:
            if not layout.encapsulated:
                raise VideoError(name, f"transfer syntax {syntax_name(syntax)} needs encapsulated Pixel Data; it is native")
            self._mpeg = MpegDecoder(layout, syntax, name, strict=strict)
            first = self._mpeg.first
            if fps is None:
                rate = self._mpeg.average_rate
                fps = float(rate) if rate else 25.0
            self.info = VideoInfo(
                frames=frames if frames is not None else 0,
                fps=fps,
                rows=first.height,
                columns=first.width,
                photometric=str(ds.get("PhotometricInterpretation", "YBR_PARTIAL_420")),
                samples_per_pixel=3,
                bits_stored=int(ds.get("BitsStored", 8) or 8),
                timing_from_header=timing_from_header,
                has_audio=self._mpeg.has_audio,
                container=self._mpeg.container_kind,
                codec=self._mpeg.codec,
                profile=self._mpeg.profile,
                pix_fmt=first.format.name,
                colorspace=int(first.colorspace),
                color_range=int(first.color_range),
                fragments=len(layout.items),
                **common,  # type: ignore[arg-type]
            )
        else:
            if "Rows" not in ds or "Columns" not in ds:
                raise VideoError(name, "no Rows/Columns: not an image")
            if layout.encapsulated == (syntax in NATIVE_SYNTAXES):
                kind = "encapsulated" if layout.encapsulated else "native"
                raise VideoError(name, f"transfer syntax {syntax_name(syntax)} does not match the data: Pixel Data is {kind}")
            self.info = VideoInfo(
                frames=frames if frames is not None else 1,
                fps=fps if fps is not None else 25.0,
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                photometric=str(ds.get("PhotometricInterpretation", "")),
                samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
                bits_stored=int(ds.get("BitsStored", 8) or 8),
                timing_from_header=timing_from_header,
                fragments=len(layout.items),
                **common,  # type: ignore[arg-type]
            )

    # -- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        self.decoded = 0
        if family(self.info.transfer_syntax) is not None:
            frames = self._iter_mpeg()
        else:
            frames = self._iter_still()
        if self.prefetch > 0:
            # Decoded a few frames ahead in a background thread, so that decoding overlaps the
            # caller's work (the face stage); errors arrive here in order (dicom_deid.overlap).
            frames = prefetch(frames, depth=self.prefetch, name="FrameReader")
            # Held weakly: a loop abandoned without close() drops the generator, whose cleanup
            # then joins the thread; close() reaches it through this reference.
            self._prefetching = weakref.ref(frames)
        for rgb in frames:
            self.decoded += 1
            yield rgb
        expected = self.info.frames
        if self.strict and expected and self.decoded != expected:
            raise VideoError(
                self._name,
                f"decoded {self.decoded} frames but NumberOfFrames is {expected} "
                "(truncated or damaged stream, or a wrong NumberOfFrames)",
            )
        if not self.info.frames:
            self.info.frames = self.decoded

    def _iter_mpeg(self) -> Iterator[np.ndarray]:
        decoder = self._mpeg
        self._mpeg = None
        if decoder is None:
            decoder = MpegDecoder(self._layout, self.info.transfer_syntax, self._name, strict=self.strict)
        reformatter = VideoReformatter()
        for frame in decoder.frames():
            yield to_rgb(frame, reformatter)

    def _iter_still(self) -> Iterator[np.ndarray]:
        from dicom_deid.video.decode_still import iter_rgb

        yield from iter_rgb(self._src, self._ds, self._name)

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        live = self._prefetching() if self._prefetching is not None else None
        self._prefetching = None
        if live is not None:
            # Stops and joins the decoding thread before anything it uses is closed.
            live.close()  # type: ignore[attr-defined]
        if self._mpeg is not None:
            self._mpeg.close()
            self._mpeg = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_frames(src: str | os.PathLike[str] | Dataset, strict: bool = True,
                prefetch: int = DEFAULT_DEPTH) -> FrameReader:
    """Open a video-bearing instance (a path, or a Dataset with its Pixel Data) for streaming.

    prefetch: frames decoded ahead in a background thread (0: decode in the caller's thread).
    """
    if isinstance(src, str | os.PathLike) and not Path(src).exists():
        raise VideoError(src, "file not found")  # type: ignore[arg-type]
    return FrameReader(src, strict=strict, prefetch=prefetch)
