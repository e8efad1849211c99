"""Replace faces in whole files: images, plain videos and DICOM video (the `faces` command).

Each function reads one input, runs every frame through a fresh `FaceReplacer` and writes the
output atomically; on any error nothing is left at the output path.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Generator, Iterable
from pathlib import Path

import numpy as np

from dicom_deid.faces.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    MediaError,
    VideoWriter,
    is_dicom,
    probe_video,
    read_image,
    read_video,
    write_image,
)
from dicom_deid.faces.replacer import FaceReplacer, FacesReport

# (fps, donor identity: a digest of the content, or the StudyInstanceUID) -> a new replacer.
# Never the file name: two captures of one patient that share a name would share a donor (and
# be linkable), and two different people called x.jpg would get the same face.
ReplacerFactory = Callable[[float, str], FaceReplacer]
Progress = Callable[[int | None], Callable[[], None]]  # total frames -> per-frame tick


def kind_of(path: Path) -> str:
    """image | video | dicom; MediaError for anything else."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if is_dicom(path):
        return "dicom"
    raise MediaError(
        f"{path}: unsupported file type {suffix or '(no suffix)'}; expected an image "
        f"({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) or DICOM"
    )


def image_identity(rgb: np.ndarray) -> str:
    """The donor identity of an image: a digest of its decoded pixels (and size)."""
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return "image:" + digest.hexdigest()


def video_identity(path: Path) -> str:
    """The donor identity of a plain video: a digest of the file's bytes. The replacer is made
    before the first frame is decoded, so the pixels themselves cannot be hashed first; the
    encoded stream is the content all the same (a re-encode is another capture)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise MediaError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return "video:" + digest.hexdigest()


def process_image(src: Path, dst: Path, make: ReplacerFactory) -> FacesReport:
    rgb = read_image(src)
    replacer = make(25.0, image_identity(rgb))
    try:
        out = replacer.process(rgb)
    finally:
        report = replacer.close()
    write_image(dst, out)
    return report


def process_video(src: Path, dst: Path, make: ReplacerFactory, progress: Progress | None = None) -> FacesReport:
    info = probe_video(src)
    tick = progress(info.frames) if progress else (lambda: None)
    replacer = make(float(info.fps), video_identity(src))
    writer = None
    try:
        writer = VideoWriter(dst, info)
        # closing(): on an error the decoding thread is joined here, not whenever the
        # traceback that holds the generator is dropped.
        def checked(frames: Iterable[np.ndarray]) -> Generator[np.ndarray, None, None]:
            for rgb in frames:
                if rgb.shape[:2] != (info.height, info.width):
                    raise MediaError(f"{src}: frame size changes mid-stream ({rgb.shape[1]}x{rgb.shape[0]})")
                yield rgb

        with contextlib.closing(read_video(src)) as frames, \
                contextlib.closing(replacer.stream(checked(frames))) as replaced:
            for _, out, _ in replaced:
                writer.write(out)
                tick()
        if writer.frames == 0:
            raise MediaError(f"{src}: no frame could be decoded")
        writer.finish()
        writer = None
    finally:
        if writer is not None:
            writer.abort()
        report = replacer.close()
    return report


def process_dicom(src: Path, dst: Path, make: ReplacerFactory, key, progress: Progress | None = None,
                  method: str = "") -> FacesReport:
    """DICOM video through dicom_deid.video; the header is kept (this is pixel work alone) except
    for a new SOP Instance UID, derived from the site key and the method: other pixels (another
    method) never share a UID, nor with the copy `deidentify` writes."""
    import pydicom

    from dicom_deid.video import open_frames

    try:
        header = pydicom.dcmread(str(src), stop_before_pixels=True)
    except Exception as exc:
        raise MediaError(f"{src}: not a readable DICOM file ({type(exc).__name__})") from exc
    study = str(header.get("StudyInstanceUID", "") or "")
    sop = str(header.get("SOPInstanceUID", "") or "")
    if not study or not sop:
        # pydicom stops quietly where a file is cut off: say so rather than blame the header.
        from dicom_deid.header.fileio import InputError, read_instance

        try:
            read_instance(src)
        except InputError as exc:
            raise MediaError(f"{src}: {exc}") from None
        raise MediaError(f"{src}: StudyInstanceUID or SOPInstanceUID missing")
    from dicom_deid.faces.dicom_pass import replace_and_write
    from dicom_deid.header.keys import faces_only_uid

    with open_frames(src) as reader:
        info = reader.info
        tick = progress(info.frames) if progress else (lambda: None)
        replacer = make(float(info.fps or 25.0), study)
        done = replace_and_write(
            reader, replacer, header, dst, info,
            sop_instance_uid=faces_only_uid(key, method, sop),
            source=(str(header.SOPClassUID), sop),
            each=lambda rgb, out, result: tick())
    return done.faces
