"""`write_frames`: one DICOM instance from a header template and a stream of RGB frames.

The template (already de-identified in the pipeline) gives every attribute except those this
module must make consistent with the new pixels: the Image Pixel and Multi-frame/Cine attributes,
Lossy Image Compression and its method and ratio (appended to the history), the new SOP Instance
UID and a Source Image Sequence item that points at the instance the frames came from. Patient,
study and series attributes are copied untouched.

The stream or the encoded frames go to temporary files next to the output; pydicom copies them into
the DICOM file through buffered values (no whole-stream copy in memory), and the file appears under
its final name only when complete (write to a temporary name, fsync, rename).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate_buffer
from pydicom.sequence import Sequence
from pydicom.uid import (
    HEVCM10P51,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DSfloat, format_number_as_ds

from dicom_deid import __version__
from dicom_deid.atomic import write_atomic
from dicom_deid.video.encode_mpeg import MpegEncoder
from dicom_deid.video.encode_still import LOSSY_METHOD as STILL_LOSSY_METHOD
from dicom_deid.video.encode_still import NATIVE, StillEncoder
from dicom_deid.video.errors import VideoError
from dicom_deid.video.info import FRAME_TIME, FRAME_TIME_VECTOR, VideoInfo, exact_rate
from dicom_deid.video.pixeldata import FileSlice
from dicom_deid.video.syntaxes import (
    FRAGMENTABLE,
    HEVC_SYNTAXES,
    LOSSY_METHOD,
    MAX_ITEM_LENGTH,
    Geometry,
    choose_pixel_syntax,
    choose_video_syntax,
    family,
    is_video_request,
    syntax_name,
)

log = logging.getLogger(__name__)

VIDEO_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
    }
)

# Attributes that describe the old pixels and would be wrong, or identifying, after re-encoding.
_DROP = {
    0x7FE00010, 0x7FE00001, 0x7FE00002, 0x7FE00008, 0x7FE00009,  # pixel data, EOT, float pixels
    0x00880200,  # Icon Image Sequence: a thumbnail of the old pixels (a face, possibly)
    0x00280106, 0x00280107, 0x00280108, 0x00280109,  # smallest/largest pixel values
    0xFFFCFFFC,  # Data Set Trailing Padding
}
_PALETTE = {0x00281101, 0x00281102, 0x00281103, 0x00281199, 0x00281201, 0x00281202, 0x00281203,
            0x00281221, 0x00281222, 0x00281223}
_GREY_ONLY = {0x00281050, 0x00281051, 0x00281055, 0x00283010, 0x20500020, 0x00281052, 0x00281053,
              0x00281054, 0x00283000, 0x00280120, 0x00280121}

_PURPOSE = {
    "uncompressed": ("121320", "Uncompressed predecessor"),
    "lossy": ("121330", "Lossy compressed predecessor"),
    "processed": ("121322", "Source image for image processing operation"),
}


@dataclass
class WriteReport:
    """What write_frames chose and produced (no patient data: safe to log and to store)."""

    path: str
    sop_instance_uid: str
    transfer_syntax: str
    transfer_syntax_name: str
    requested: str
    source_transfer_syntax: str
    reason: str | None
    frames: int
    rows: int
    columns: int
    padded_from: tuple[int, int] | None
    photometric: str
    container: str | None
    encoder: str | None
    quality: float | None
    lossy: bool
    compression_ratio: float | None
    pixel_bytes: int
    fragments: int
    audio: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ds_str(value: float) -> str:
    return format_number_as_ds(float(value))


def _frames_checked(frames: Iterable[np.ndarray], name: str) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise VideoError(name, "no frames to write (zero frames)") from None
    first = _as_rgb(first, name, 1)
    shape = first.shape

    def rest() -> Iterator[np.ndarray]:
        index = 1
        for frame in it:
            index += 1
            rgb = _as_rgb(frame, name, index)
            if rgb.shape != shape:
                raise VideoError(name, f"frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, frame 1 was {shape[1]}x{shape[0]}")
            yield rgb

    return first, rest()


def _as_rgb(frame: Any, name: str, index: int) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise VideoError(name, f"frame {index} has dtype {arr.dtype}; uint8 RGB is required")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise VideoError(name, f"frame {index} has shape {arr.shape}; HxWx3 RGB is required")
    return arr


def _pad_even(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    # Edge replication: nothing is lost, and the padding compresses to almost nothing.
    return np.pad(frame, ((0, height - h), (0, width - w), (0, 0)), mode="edge")


def _choose_container(fam: str, info: VideoInfo, keep_audio: bool, variable: bool) -> tuple[str, str | None]:
    same_family = family(info.transfer_syntax) == fam
    src = info.container if same_family else None
    if fam == "mpeg2":
        if keep_audio:
            return ("mpeg-ts" if src == "mpeg-ts" else "mpeg-ps"), None
        return (src if src in ("es", "mpeg-ps", "mpeg-ts") else "es"), None
    if keep_audio:
        return ("mpeg-ts" if src == "mpeg-ts" else "mp4"), None
    if variable and src not in ("mp4", "mpeg-ts"):
        return "mp4", "variable frame timing: written in an MP4 container, which carries per-frame timestamps"
    if src in ("es", "mp4", "mpeg-ts"):
        return src, None
    # PS3.5 8.2.8 ff. ask for an MP4 (or MPEG-TS) container; MP4 also plays in web viewers.
    return "mp4", None


class _Work:
    """A private temporary folder beside the output, removed whatever happens."""

    def __init__(self, out_path: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".work", dir=out_path.parent))

    def __enter__(self) -> _Work:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_frames(
    template_ds: Dataset,
    frames_iterable: Iterable[np.ndarray],
    out_path: str | os.PathLike[str],
    info: VideoInfo,
    transfer_syntax: str = "same",
    quality: float | None = None,
    sop_instance_uid: str | None = None,
    source: tuple[str, str] | None = None,
    keep_audio: bool = False,
    pixels_changed: bool = False,
) -> WriteReport:
    """Encode the frames and write one DICOM file atomically; returns what was chosen.

    transfer_syntax: 'same' (the source's, or the closest that can be written and fits),
    'mpeg2', 'h264', 'hevc', 'native', 'rle', 'jpeg', 'jpeg-ls', 'jpeg2000', or a UID.
    quality: codec-specific (see encode_mpeg / encode_still); None for the defaults.
    source: (SOP Class UID, SOP Instance UID) to reference in Source Image Sequence.
    keep_audio: keep the source's audio tracks (default: dropped; a voice identifies a person).
    pixels_changed: the frames were modified (faces replaced), which sets the purpose of reference.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    name = info.name
    new_uid = sop_instance_uid or generate_uid(prefix=None)
    first, rest = _frames_checked(frames_iterable, name)
    height, width = first.shape[:2]
    notes: list[str] = []
    with _Work(out_path) as work:
        if is_video_request(transfer_syntax, info.transfer_syntax):
            pixel = _encode_video(first, rest, work.dir, info, transfer_syntax, quality, keep_audio, name, notes)
        else:
            grey = int(template_ds.get("SamplesPerPixel", 3) or 3) == 1
            pixel = _encode_still(first, rest, work.dir, info, transfer_syntax, quality, grey, name)
        if info.frame_time_vector is not None and len(info.frame_time_vector) != pixel.frames:
            raise VideoError(name, f"{pixel.frames} frames written but the source timing has {len(info.frame_time_vector)}: frame timing cannot be kept")
        if info.frames and pixel.frames != info.frames:
            notes.append(f"{pixel.frames} frames written; the source had {info.frames}")
        ds = _build_dataset(template_ds, info, pixel, new_uid, source, pixels_changed, notes)
        _save_atomic(ds, out_path, name)
        pixel.close()
    report = WriteReport(
        path=str(out_path), sop_instance_uid=new_uid, transfer_syntax=str(pixel.syntax),
        transfer_syntax_name=UID(pixel.syntax).name, requested=transfer_syntax,
        source_transfer_syntax=info.transfer_syntax, reason=pixel.reason, frames=pixel.frames,
        rows=pixel.rows, columns=pixel.columns,
        padded_from=(height, width) if (height, width) != (pixel.rows, pixel.columns) else None,
        photometric=pixel.photometric, container=pixel.container, encoder=pixel.encoder,
        quality=pixel.quality, lossy=pixel.lossy_step, compression_ratio=pixel.ratio,
        pixel_bytes=pixel.nbytes, fragments=len(pixel.segments), audio=pixel.audio,
        notes=notes + pixel.notes,
    )
    log.debug(
        "wrote %s: %s, %d frames %dx%d%s", out_path.name, syntax_name(pixel.syntax), pixel.frames,
        pixel.columns, pixel.rows, f" ({pixel.reason})" if pixel.reason else "",
    )
    return report


@dataclass
class _Pixels:
    syntax: UID
    reason: str | None
    frames: int
    rows: int
    columns: int
    photometric: str
    samples: int
    bits_allocated: int
    bits_stored: int
    encapsulated: bool
    path: Path
    segments: list[tuple[int, int]]
    lossy_step: bool
    method: str | None
    quality: float | None
    container: str | None
    encoder: str | None
    audio: str = "none"
    notes: list[str] = field(default_factory=list)
    fd: int | None = None

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.segments)

    @property
    def ratio(self) -> float | None:
        if not self.lossy_step or not self.nbytes:
            return None
        raw = self.rows * self.columns * self.samples * (self.bits_allocated // 8) * self.frames
        return raw / self.nbytes

    def open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _encode_video(first, rest, work: Path, info: VideoInfo, requested: str, quality, keep_audio: bool, name: str, notes: list[str]) -> _Pixels:
    height, width = first.shape[:2]
    even_h, even_w = height + height % 2, width + width % 2
    if (even_h, even_w) != (height, width):
        notes.append(f"padded from {width}x{height} to {even_w}x{even_h}: 4:2:0 video needs even sizes")
    fps = info.fps
    if not info.timing_from_header:
        notes.append(f"the source has no frame timing; {fps:.4g} fps assumed")
    choice = choose_video_syntax(requested, info.transfer_syntax, Geometry(even_w, even_h, fps))
    fam = family(choice.uid)
    assert fam is not None
    audio_kept = keep_audio and info.has_audio
    container, why = _choose_container(fam, info, audio_kept, info.variable_timing)
    if why:
        notes.append(why)
    stream_path = work / f"video.{container}"
    encoder = MpegEncoder(
        stream_path, choice.uid, even_w, even_h, exact_rate(fps),
        container, quality=quality, pts_ms=info.pts_ms() if info.variable_timing else None,
        colorspace=info.colorspace if family(info.transfer_syntax) else None,
        color_range=info.color_range if family(info.transfer_syntax) else None, name=name,
    )
    try:
        encoder.encode(_pad_even(first, even_h, even_w))
        for frame in rest:
            encoder.encode(_pad_even(frame, even_h, even_w))
        result = encoder.close()
    except BaseException:
        encoder.abort()
        raise
    audio = "none"
    if info.has_audio:
        audio = "dropped"
        if keep_audio:
            final = work / f"final.{container}"
            from dicom_deid.video.audio import mux_with_audio

            if mux_with_audio(stream_path, info.origin, final, container, name):
                stream_path = final
                audio = "kept"
    size = stream_path.stat().st_size
    syntax = UID(choice.uid)
    segments: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        length = min(MAX_ITEM_LENGTH, size - offset)
        segments.append((offset, length))
        offset += length
    if len(segments) > 1 and syntax not in HEVC_SYNTAXES:
        # A single item holds at most 4 GiB; longer streams need the fragmentable syntax.
        syntax = UID(FRAGMENTABLE.get(syntax, syntax))
        notes.append(f"stream of {size} bytes split over {len(segments)} fragments")
    main10 = syntax == HEVCM10P51
    return _Pixels(
        syntax=syntax, reason=choice.reason, frames=result.frames, rows=even_h, columns=even_w,
        photometric="YBR_PARTIAL_420", samples=3, bits_allocated=16 if main10 else 8,
        bits_stored=10 if main10 else 8, encapsulated=True, path=stream_path, segments=segments,
        lossy_step=True, method=LOSSY_METHOD[fam], quality=encoder.quality, container=container,
        encoder=result.codec, audio=audio, notes=result.notes,
    )


def _encode_still(first, rest, work: Path, info: VideoInfo, requested: str, quality, grey: bool, name: str) -> _Pixels:
    choice = choose_pixel_syntax(requested, info.transfer_syntax)
    height, width = first.shape[:2]
    path = work / "frames.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        encoder = StillEncoder(fd, choice.uid, height, width, grey, quality, name)
        encoder.encode(first)
        for frame in rest:
            encoder.encode(frame)
        result = encoder.close()
    finally:
        os.close(fd)
    native = choice.uid in NATIVE
    segments = result.segments
    if native:
        total = sum(length for _, length in segments)
        segments = [(0, total)]
    return _Pixels(
        syntax=UID(choice.uid), reason=choice.reason, frames=result.frames, rows=height, columns=width,
        photometric=result.photometric, samples=1 if grey else 3, bits_allocated=8, bits_stored=8,
        encapsulated=not native, path=path, segments=segments, lossy_step=result.lossy,
        method=STILL_LOSSY_METHOD.get(choice.uid), quality=result.quality, container=None,
        encoder=None,
    )


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes | DSfloat | float | int):
        return [str(value)]
    return [str(v) for v in value]


def _build_dataset(template: Dataset, info: VideoInfo, pixel: _Pixels, new_uid: str,
                   source: tuple[str, str] | None, pixels_changed: bool, notes: list[str]) -> Dataset:
    ds = Dataset()
    drop = set(_DROP) | _PALETTE
    if not pixel.photometric.startswith("MONOCHROME"):
        drop |= _GREY_ONLY
    # By tag first: a dropped element (the old Pixel Data, possibly still in its file) is
    # never decoded.
    for tag in template.keys():  # noqa: SIM118 (iterating a Dataset decodes every element)
        if int(tag) in drop or tag.element == 0 or tag.group == 0x0002:
            continue
        ds.add(copy.deepcopy(template[tag]))
    if "SOPClassUID" not in ds:
        raise VideoError(info.name, "the template has no SOP Class UID")

    # Image Pixel module: what the new Pixel Data holds.
    ds.SamplesPerPixel = pixel.samples
    ds.PhotometricInterpretation = pixel.photometric
    if pixel.samples == 3:
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.Rows, ds.Columns = pixel.rows, pixel.columns
    ds.BitsAllocated, ds.BitsStored = pixel.bits_allocated, pixel.bits_stored
    ds.HighBit = pixel.bits_stored - 1
    ds.PixelRepresentation = 0
    single = (pixel.frames == 1 and "NumberOfFrames" not in template
              and str(ds.SOPClassUID) not in VIDEO_SOP_CLASSES)
    if not single:
        # A single-frame source of a single-frame IOD gets no Multi-frame attributes its
        # IOD lacks (NumberOfFrames, FrameTime).
        ds.NumberOfFrames = pixel.frames
        _set_timing(ds, info, pixel.frames, notes)
    _set_lossy(ds, info, pixel)
    ds.SOPInstanceUID = new_uid
    if source is not None:
        _add_source(ds, source, "processed" if pixels_changed else ("lossy" if info.lossy else "uncompressed"))

    fd = pixel.open()
    if pixel.encapsulated:
        slices = [FileSlice(fd, start, length) for start, length in pixel.segments]
        if family(pixel.syntax) is not None:
            # PS3.5 8.2: one frame (the whole stream, in one or more items), empty offset table.
            has_bot = False
        else:
            # One item per frame; offsets are 32 bits, so very large values go without a table.
            has_bot = pixel.nbytes + 8 * len(slices) < 2**32
        ds.PixelData = encapsulate_buffer(slices, has_bot=has_bot)  # type: ignore[arg-type]
        ds["PixelData"].VR = "OB"
    else:
        start, length = pixel.segments[0]
        ds.PixelData = FileSlice(fd, start, length, pad=True)
        ds["PixelData"].VR = "OW" if pixel.syntax == ImplicitVRLittleEndian else "OB"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = new_uid  # type: ignore[assignment]
    meta.TransferSyntaxUID = pixel.syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DICOM-DEID {__version__}"[:16]
    ds.file_meta = meta
    return ds


def _set_timing(ds: Dataset, info: VideoInfo, frames: int, notes: list[str]) -> None:
    video_class = str(ds.SOPClassUID) in VIDEO_SOP_CLASSES
    pointer = ds.get("FrameIncrementPointer")
    if info.frame_time_vector is not None:
        ds.FrameTimeVector = [_ds_str(v) for v in info.frame_time_vector]
        if pointer is None:
            ds.FrameIncrementPointer = FRAME_TIME_VECTOR
    elif info.frame_time_ms is not None:
        if not ("FrameTime" in ds and abs(float(ds.FrameTime) - info.frame_time_ms) < 1e-6):
            ds.FrameTime = _ds_str(info.frame_time_ms)
        if pointer is None:
            ds.FrameIncrementPointer = FRAME_TIME
    elif video_class or pointer is not None:
        ds.FrameTime = _ds_str(1000.0 / info.fps)
        if pointer is None:
            ds.FrameIncrementPointer = FRAME_TIME
        notes.append("FrameTime added from the stream's frame rate")
    if "CineRate" not in ds and video_class:
        ds.CineRate = max(1, round(info.fps))
    for keyword in ("StartTrim", "StopTrim"):
        if keyword in ds and ds.get(keyword) not in (None, ""):
            value = int(ds.get(keyword))
            if value > frames:
                setattr(ds, keyword, frames)
                notes.append(f"{keyword} clamped to {frames}")


def _set_lossy(ds: Dataset, info: VideoInfo, pixel: _Pixels) -> None:
    methods = _values(ds, "LossyImageCompressionMethod")
    ratios = _values(ds, "LossyImageCompressionRatio")
    if info.lossy:
        ds.LossyImageCompression = "01"
    if not pixel.lossy_step:
        return
    ds.LossyImageCompression = "01"
    if len(ratios) == len(methods) - 1 and info.stream_bytes and info.lossy:
        # The source's own step has a method but no recorded ratio: measure it so that
        # method i still pairs with ratio i.
        raw = info.rows * info.columns * 3 * max(1, info.frames)
        ratios.append(_ds_str(round(raw / info.stream_bytes, 2)))
    methods.append(pixel.method or "")
    ratios.append(_ds_str(round(pixel.ratio or 1.0, 2)))
    ds.LossyImageCompressionMethod = methods
    ds.LossyImageCompressionRatio = ratios


def _add_source(ds: Dataset, source: tuple[str, str], purpose: str) -> None:
    class_uid, instance_uid = source
    code_value, meaning = _PURPOSE[purpose]
    seq = list(ds.get("SourceImageSequence", []) or [])
    for item in seq:
        if item.get("ReferencedSOPInstanceUID") == instance_uid:
            return
    code = Dataset()
    code.CodeValue = code_value
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = meaning
    item = Dataset()
    item.ReferencedSOPClassUID = class_uid
    item.ReferencedSOPInstanceUID = instance_uid
    item.PurposeOfReferenceCodeSequence = Sequence([code])
    seq.append(item)
    ds.SourceImageSequence = Sequence(seq)


def _save_atomic(ds: Dataset, out_path: Path, name: str) -> None:
    try:
        write_atomic(ds, out_path, durable=True)
    except OSError as exc:
        raise VideoError(name, f"cannot write {out_path.name} ({exc})") from exc
