"""One pass of a DICOM instance's frames through the face stage and the encoder.

    done = replace_and_write(reader, replacer, template, target, info,
                             sop_instance_uid=uid, source=None, each=..., then=...)

The loop both DICOM paths share: the pipeline's pixel stage (with keypoints and the text
stage) and `dicom-deid faces` on DICOM (faces alone). The face stage tracks frame n+1 in its
own thread while frame n is leak-checked in the caller's (FaceReplacer.stream); the encoder
runs a few frames behind in another (dicom_deid.video.write_frames). A fix to how the threads
are stopped on a failure is made here once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from dicom_deid.faces.replacer import FacesReport, FrameResult

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from dicom_deid.video.info import VideoInfo
    from dicom_deid.video.writer import WriteReport

# (original frame, output frame, the face stage's result for it), once per frame, in order.
FrameHook = Callable[[np.ndarray, np.ndarray, FrameResult], None]
# A filter on the output frames on their way to the encoder (e.g. TextStage.stream).
FrameFilter = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]


class FaceStage(Protocol):
    """What the pass needs of a face stage: FaceReplacer, or the pixel stage's stand-in
    when only text is cleaned."""

    def stream(self, frames: Iterable[np.ndarray]) -> Generator[
            tuple[np.ndarray, np.ndarray, FrameResult], None, None]: ...

    def close(self) -> FacesReport: ...


@dataclass
class PassResult:
    """What the pass wrote and what the face stage did. faces_s: the time the caller's thread
    spent waiting for and leak-checking frames (not the face stage's CPU time)."""

    written: WriteReport
    faces: FacesReport
    faces_s: float


def replace_and_write(reader: Iterable[np.ndarray], replacer: FaceStage,
                      template: Dataset, target: Path, info: VideoInfo, *,
                      sop_instance_uid: str, source: tuple[str, str] | None,
                      each: FrameHook | None = None,
                      then: FrameFilter | None = None) -> PassResult:
    """Every frame of `reader` through `replacer` (and `then`) into `target`, a DICOM file
    with the header of `template`, written atomically by write_frames. The replacer is closed
    here, on success and on failure; the reader is the caller's to close. write_frames writes
    `target` atomically: on any error it is not created, and the exception reaches the caller
    unchanged."""
    from dicom_deid.video import write_frames

    faces_s = [0.0]

    def frames() -> Generator[np.ndarray, None, None]:
        with contextlib.closing(replacer.stream(reader)) as replaced:
            t0 = time.monotonic()
            for rgb, out, result in replaced:
                faces_s[0] += time.monotonic() - t0
                if each is not None:
                    each(rgb, out, result)
                yield out
                t0 = time.monotonic()

    replaced = frames()
    stream = then(replaced) if then is not None else replaced
    try:
        written = write_frames(template, stream, target, info, transfer_syntax="same",
                               sop_instance_uid=sop_instance_uid, source=source,
                               pixels_changed=True)
    finally:
        # write_frames does not close what it was given: on its failure the face stage's
        # thread must stop here, before the reader and the replacer it uses are closed.
        for generator in (stream, replaced):
            close = getattr(generator, "close", None)
            if close is not None:
                close()
        report = replacer.close()
    return PassResult(written, report, faces_s[0])
