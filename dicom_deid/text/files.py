"""Cover burned-in text in whole files: images, plain videos and DICOM (the `text` command).

Each function reads one input, runs its frames through a fresh `TextStage` and writes the
output atomically (through dicom_deid.faces.media and dicom_deid.video); on any error nothing
is left at the output path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from dicom_deid.text.phi import PhiTerms
from dicom_deid.text.stage import TextReport, TextStage

# (PhiTerms) -> a new stage for one file
StageFactory = Callable[[PhiTerms], TextStage]


def process_image(src: Path, dst: Path, make: StageFactory) -> TextReport:
    from dicom_deid.faces.media import read_image, write_image

    rgb = read_image(src)
    stage = make(PhiTerms())
    out = stage.process_image(rgb)
    report = stage.close()
    write_image(dst, out)
    return report


def process_video(src: Path, dst: Path, make: StageFactory) -> TextReport:
    from dicom_deid.faces.media import MediaError, VideoWriter, probe_video, read_video

    info = probe_video(src)
    stage = make(PhiTerms())
    writer = VideoWriter(dst, info)
    try:
        with contextlib.closing(read_video(src)) as frames, \
                contextlib.closing(stage.stream(frames)) as cleaned:  # type: ignore[type-var]
            for out in cleaned:
                writer.write(out)
        if writer.frames == 0:
            raise MediaError(f"{src}: no frame could be decoded")
        writer.finish()
        writer = None  # type: ignore[assignment]
    finally:
        if writer is not None:
            writer.abort()
    return stage.close()


def process_dicom(src: Path, dst: Path, make: StageFactory, key) -> TextReport:
    """Pixels only: the header is kept (that is `deidentify`'s work) except for a new keyed
    SOP Instance UID; the original header's identifying values drive redact-phi."""
    import pydicom

    from dicom_deid.faces.media import MediaError
    from dicom_deid.header.keys import reencoded_uid
    from dicom_deid.video import open_frames, write_frames

    try:
        header = pydicom.dcmread(str(src), stop_before_pixels=True)
    except Exception as exc:
        raise MediaError(f"{src}: not a readable DICOM file ({type(exc).__name__})") from exc
    sop = str(header.get("SOPInstanceUID", "") or "")
    if not sop or "SOPClassUID" not in header:
        raise MediaError(f"{src}: SOPClassUID or SOPInstanceUID missing")
    stage = make(PhiTerms.from_dataset(header))
    with open_frames(src) as reader:
        cleaned = stage.stream(reader)
        try:
            write_frames(header, cleaned, dst, reader.info, transfer_syntax="same",
                         sop_instance_uid=reencoded_uid(key, sop),
                         source=(str(header.SOPClassUID), sop), pixels_changed=True)
        finally:
            cleaned.close()  # type: ignore[attr-defined]
    return stage.close()
