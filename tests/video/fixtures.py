"""Small DICOM videos made on the fly with PyAV, for the video tests.

Everything is generated: frames are a moving crop of skimage's astronaut (public domain) with a
sliding colour ramp, encoded by FFmpeg's encoders into the container and syntax asked for, then
wrapped in a Video Photographic (or other) header with invented, obviously fake identifiers.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    HEVCMP51,
    MPEG2MPML,
    MPEG4HP41,
    ExplicitVRLittleEndian,
    generate_uid,
)

VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VIDEO_MICROSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.2.1"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
MF_GREY_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"

_MODALITY = {VIDEO_PHOTOGRAPHIC: "XC", VIDEO_ENDOSCOPIC: "ES", VIDEO_MICROSCOPIC: "GM"}

_ASTRONAUT: np.ndarray | None = None


def _astronaut() -> np.ndarray:
    global _ASTRONAUT
    if _ASTRONAUT is None:
        from skimage import data

        _ASTRONAUT = data.astronaut()
    return _ASTRONAUT


def pattern_frames(count: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic moving content: an astronaut crop drifting over a sliding ramp."""
    import cv2

    base = cv2.resize(_astronaut(), (width * 2, height * 2), interpolation=cv2.INTER_AREA)
    ramp = np.linspace(0, 255, width * 3, dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        x, y = (i * 3 + seed) % width, (i * 2) % height
        crop = base[y : y + height, x : x + width].astype(np.float32)
        shift = ramp[(i * 4) % width : (i * 4) % width + width][None, :, None]
        frame = 0.8 * crop + 0.2 * shift + rng.normal(0, 1.0, crop.shape)
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


def encode_stream(
    frames: list[np.ndarray],
    codec: str,
    fmt: str,
    rate: Fraction = Fraction(25),
    bframes: int = 2,
    audio: bool = False,
    pts_ms: list[float] | None = None,
    pix_fmt: str = "yuv420p",
) -> bytes:
    """Encode frames with FFmpeg into bytes of the given container ('h264', 'mp4', 'vob', ...)."""
    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    options = {
        "libx264": {"crf": "18", "preset": "veryfast", "x264-params": f"bframes={bframes}:keyint=8"},
        "libx265": {"crf": "16", "preset": "fast", "x265-params": f"log-level=error:bframes={bframes}:keyint=8"},
        "mpeg2video": {"qmin": "2", "qmax": "4", "bf": str(bframes), "g": "8"},
    }[codec]
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 90000)
            stream.time_base = Fraction(1, 90000)
        audio_stream = None
        if audio:
            audio_stream = out.add_stream("aac", rate=48000)
            audio_stream.layout = "mono"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = round(pts_ms[i] * 90) if pts_ms is not None else i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio_stream is not None:
            seconds = len(frames) / float(rate)
            samples = int(48000 * seconds)
            t = np.arange(samples) / 48000.0
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start : start + 1024]
                if len(chunk) < 1024:
                    chunk = np.pad(chunk, (0, 1024 - len(chunk)))
                aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                aframe.sample_rate = 48000
                aframe.pts = start
                out.mux(audio_stream.encode(aframe))
            out.mux(audio_stream.encode(None))
    return buf.getvalue()


def base_header(sop_class: str, rows: int, columns: int, frames: int, frame_time: float | None = 40.0) -> Dataset:
    """A plausible image header with invented identifiers (no real person)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.AccessionNumber = "TESTACC1"
    ds.Modality = _MODALITY.get(sop_class, "OT")
    ds.Manufacturer = "Test Generator"
    ds.ReferringPhysicianName = "TEST^REFERRER"
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "TEST-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = frames
    ds.Laterality = None
    if sop_class in _MODALITY:
        ds.AcquisitionContextSequence = Sequence([])
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "89545001", "SCT", "Face"
        ds.AnatomicRegionSequence = Sequence([region])
    if sop_class in (MF_TRUE_COLOR_SC, MF_GREY_BYTE_SC):
        ds.ConversionType = "WSD"
    if sop_class == MF_GREY_BYTE_SC:
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.PresentationLUTShape = "IDENTITY"
    if frame_time is not None:
        ds.FrameTime = f"{frame_time:.3f}"
        ds.FrameIncrementPointer = 0x00181063
        ds.CineRate = round(1000 / frame_time)
        ds.RecommendedDisplayFrameRate = round(1000 / frame_time)
        ds.StartTrim = 1
        ds.StopTrim = frames
    return ds


def _with_meta(ds: Dataset, syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    return ds


def split(data: bytes, parts: int) -> list[bytes]:
    """Split into `parts` fragments of even length (items must be even)."""
    if parts <= 1:
        return [data]
    size = max(2, (len(data) // parts) & ~1)
    out = [data[i : i + size] for i in range(0, len(data), size)]
    if len(out) > parts:
        out[parts - 1 :] = [b"".join(out[parts - 1 :])]
    return out


def encapsulate_stream(fragments: list[bytes], bot: bytes = b"") -> bytes:
    """Items: a basic offset table (empty or as given) then each fragment, padded to even."""
    items = [bot, *[f + (b"\x00" if len(f) % 2 else b"") for f in fragments]]
    # pydicom writes the sequence delimiter itself.
    return b"".join(b"\xfe\xff\x00\xe0" + len(i).to_bytes(4, "little") + i for i in items)


def make_video(
    path: Path,
    codec: str = "h264",
    container: str = "es",
    width: int = 96,
    height: int = 64,
    frames: int = 16,
    fps: Fraction = Fraction(25),
    bframes: int = 2,
    fragments: int = 1,
    audio: bool = False,
    frame_time_vector: list[float] | None = None,
    sop_class: str = VIDEO_PHOTOGRAPHIC,
    syntax: str | None = None,
    bot: bytes = b"",
    number_of_frames: int | None = None,
    stream_bytes: bytes | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write a DICOM video and return its path."""
    pictures = pattern_frames(frames, width, height)
    encoder = {"h264": "libx264", "hevc": "libx265", "mpeg2": "mpeg2video"}[codec]
    fmt = {("h264", "es"): "h264", ("hevc", "es"): "hevc", ("mpeg2", "es"): "mpeg2video",
           ("mpeg2", "ps"): "vob", ("h264", "ts"): "mpegts"}.get((codec, container), "mp4")
    pts = None
    if frame_time_vector is not None:
        pts = list(np.cumsum(frame_time_vector))
    data = stream_bytes if stream_bytes is not None else encode_stream(
        pictures, encoder, fmt, fps, bframes, audio, pts, pix_fmt
    )
    frame_time = None if frame_time_vector is not None else 1000.0 / float(fps)
    ds = base_header(sop_class, height, width, number_of_frames if number_of_frames is not None else frames, frame_time)
    if frame_time_vector is not None:
        ds.FrameTimeVector = [f"{v:.3f}" for v in frame_time_vector]
        ds.FrameIncrementPointer = 0x00181065
        ds.CineRate = round(1000 * (len(frame_time_vector) - 1) / sum(frame_time_vector))
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    if "10" in pix_fmt:  # HEVC Main 10 (PS3.5 8.2.12): 10 bits stored in 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 10, 9, 0
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = {"h264": "ISO_14496_10", "hevc": "ISO_23008_2", "mpeg2": "ISO_13818_2"}[codec]
    ds.PixelData = encapsulate_stream(split(data, fragments), bot)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    uid = syntax or {"h264": MPEG4HP41, "hevc": HEVCMP51, "mpeg2": MPEG2MPML}[codec]
    _with_meta(ds, uid).save_as(path, enforce_file_format=True)
    return path


def make_multiframe(
    path: Path,
    width: int = 64,
    height: int = 48,
    frames: int = 6,
    grey: bool = False,
    sop_class: str | None = None,
    frame_time: float | None = 40.0,
) -> Path:
    """A native (explicit VR little endian) multi-frame RGB or MONOCHROME2 instance."""
    pictures = pattern_frames(frames, width, height, seed=3)
    sop = sop_class or (MF_GREY_BYTE_SC if grey else MF_TRUE_COLOR_SC)
    ds = base_header(sop, height, width, frames, frame_time)
    if grey:
        ys = [np.clip(p @ np.array([0.299, 0.587, 0.114]) + 0.5, 0, 255).astype(np.uint8) for p in pictures]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        data = b"".join(y.tobytes() for y in ys)
    else:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        data = b"".join(p.tobytes() for p in pictures)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    ds["PixelData"].VR = "OB"
    _with_meta(ds, ExplicitVRLittleEndian).save_as(path, enforce_file_format=True)
    return path


def make_still(
    path: Path,
    syntax: str,
    width: int = 64,
    height: int = 48,
    frames: int = 6,
    grey: bool = False,
    quality: int = 92,
) -> Path:
    """A multi-frame instance in a still-image syntax, compressed independently of the writer.

    JPEG baseline frames come from OpenCV (4:2:2, YBR_FULL_422); RLE, JPEG-LS and JPEG 2000 from
    pydicom's own encoders (with the pyjpegls and openjpeg plugins).
    """
    import cv2
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    native = make_multiframe(path, width=width, height=height, frames=frames, grey=grey)
    ds = dcmread(native)
    arr = ds.pixel_array
    if syntax == JPEGBaseline8Bit:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        if not grey:
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
        items = []
        for frame in arr if frames > 1 else [arr]:
            image = frame if grey else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", image, params)
            assert ok
            items.append(buf.tobytes())
        ds.PixelData = encapsulate(items, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        if not grey:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.LossyImageCompressionRatio = f"{arr.nbytes / sum(len(i) for i in items):.2f}"
    else:
        ds.compress(syntax, arr, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path
