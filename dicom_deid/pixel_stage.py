"""The pixel stage of one instance: decode -> keypoints -> replace faces -> encode -> SR.

    outcome = clean_faces(path, header, profile, method, key, target)

The caller (pipeline.py) has already de-identified the header; this module re-encodes the
frames with every face replaced (dicom_deid.faces), measures keypoints on the original frames
and on the output (dicom_deid.keypoints), and builds the keypoint Structured Report. The
re-encoded instance and the SR get UIDs derived from the site key (docs/CONTRACTS.md), so a
re-run or a re-send after a crash gives the same UIDs. Nothing here writes anything but the
target file (atomically, through dicom_deid.video) and returns the SR dataset to the caller.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_deid.header import PixelStatus, Profile, SiteKey, mark_pixels
from dicom_deid.progress import start_frames

if TYPE_CHECKING:
    from dicom_deid.faces import FrameResult

LOG = logging.getLogger(__name__)


class PixelStageError(Exception):
    """The pixel work an instance needs cannot be done; the message carries no PHI."""


@dataclass
class PixelOutcome:
    """What the pixel stage did to one instance (PHI-free, JSON-ready through `report`)."""

    status: PixelStatus
    video: Path
    sop_instance_uid: str
    sr: Dataset | None = None
    keypoints: list | None = None
    report: dict[str, Any] = field(default_factory=dict)


def donor_seed(key: SiteKey, original_study_uid: str) -> int:
    """The synthetic donor of a study: keyed, so two studies of one patient differ."""
    return key.integer("donor", original_study_uid, 2**32)


def _original_face_landmarks(result: FrameResult) -> list:
    return [f.landmarks for f in result.faces if f.landmarks is not None]


def clean_faces(path: Path, header_ds: Dataset, original_study: str, original_sop: str,
                profile: Profile, method: str, key: SiteKey, target: Path, *,
                keypoints: bool | None = None, durable: bool = True) -> PixelOutcome:
    """Replace the faces in every frame of `path` and write the result to `target`.

    header_ds is the de-identified header (from the header stage); original_study and
    original_sop are the source's UIDs, used only to derive keyed values. Raises
    PixelStageError or dicom_deid.video.VideoError with a PHI-free message.
    """
    from dicom_deid.faces import FaceReplacer
    from dicom_deid.video import open_frames, write_frames

    want_keypoints = profile.keypoints if keypoints is None else keypoints
    status = PixelStatus(burned_in_annotation_cleaned=False, faces_cleaned=True, method=method)
    template = header_ds.copy()
    # The header must say what was done before the frames are written with it.
    mark_pixels(template, profile, status)
    new_uid = key.uid("reencoded:" + original_sop)
    timings = {"faces_s": 0.0, "keypoints_s": 0.0}
    originals: list = []
    outputs: list = []
    start = time.monotonic()
    with open_frames(path) as reader:
        info = reader.info
        fps = float(info.fps or 25.0)
        replacer = FaceReplacer(method=method, shape=profile.face_shape if method == "swap" else 0.0,
                                donor_seed=donor_seed(key, original_study), fps=fps)
        extract_original = extract_output = None
        if want_keypoints:
            from dicom_deid.keypoints import KeypointExtractor

            extract_original = KeypointExtractor(face=True, fps=fps)
            extract_output = KeypointExtractor(face=True, fps=fps)

        tick = start_frames(info.frames)

        def frames():
            # The face stage tracks frame n+1 in its own thread while frame n is leak-checked
            # here: "faces" is the time this thread waited for it and checked, not its CPU.
            with contextlib.closing(replacer.stream(reader)) as replaced:
                t0 = time.monotonic()
                for rgb, out, result in replaced:
                    t1 = time.monotonic()
                    timings["faces_s"] += t1 - t0
                    if extract_original is not None:
                        originals.append(extract_original.extract(
                            rgb, face_landmarks=_original_face_landmarks(result)))
                        # Sets the original lacks cannot be compared, so they are not run on the
                        # output.
                        outputs.append(extract_output.extract(out, like=originals[-1]))
                        timings["keypoints_s"] += time.monotonic() - t1
                    tick()
                    yield out
                    t0 = time.monotonic()

        replaced = frames()
        try:
            written = write_frames(
                template, replaced, target, info, transfer_syntax="same",
                sop_instance_uid=new_uid,
                source=(str(header_ds.SOPClassUID), str(header_ds.SOPInstanceUID)),
                pixels_changed=True,
            )
        finally:
            # write_frames does not close what it was given: on its failure the face stage's
            # thread must stop here, before the reader and the replacer it uses are closed.
            replaced.close()
            faces_report = replacer.close()
            for extractor in (extract_original, extract_output):
                if extractor is not None and hasattr(extractor, "close"):
                    extractor.close()
    total = time.monotonic() - start
    if faces_report.frames != written.frames:
        raise PixelStageError(
            f"{faces_report.frames} frames went through the face stage but {written.frames} "
            "were written"
        )
    # Decoding and encoding run in their own threads (dicom_deid.overlap), overlapping the
    # face stage: "decode_encode" is the wall time left over, not the codecs' own cost.
    report: dict[str, Any] = {
        "faces": faces_report.as_dict(),
        "video": written.to_dict(),
        "timings_s": {"total": round(total, 3),
                      "faces": round(timings["faces_s"], 3),
                      "keypoints": round(timings["keypoints_s"], 3),
                      "decode_encode": round(total - timings["faces_s"] - timings["keypoints_s"], 3)},
    }
    report["video"].pop("path", None)
    outcome = PixelOutcome(status=status, video=target, sop_instance_uid=new_uid, report=report)
    if want_keypoints:
        outcome.keypoints = originals
        outcome.sr, report["invariance"] = _keypoint_sr(
            target, originals, outputs, faces_report, profile, key, original_study, original_sop)
    return outcome


def _keypoint_sr(video_path: Path, originals: list, outputs: list, faces_report: Any,
                 profile: Profile, key: SiteKey, original_study: str,
                 original_sop: str) -> tuple[Dataset, dict[str, Any]]:
    from dicom_deid.keypoints import build_keypoint_sr, invariance

    t0 = time.monotonic()
    metrics = invariance(originals, outputs,
                         fallback_frames=faces_report.fallback_frames,
                         leak_frames=faces_report.leak_frames)
    video_ds = dcmread(video_path, stop_before_pixels=True)
    sr = build_keypoint_sr(
        video_ds, originals, metrics,
        series_uid=key.uid("keypoint-sr-series:" + original_study),
        sop_uid=key.uid("keypoint-sr:" + original_sop),
        frame_step=profile.keypoint_frame_step,
    )
    summary = metrics.as_dict() if hasattr(metrics, "as_dict") else dict(vars(metrics))
    summary["sr_build_s"] = round(time.monotonic() - t0, 3)
    return sr, summary
