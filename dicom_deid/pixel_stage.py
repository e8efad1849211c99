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
                keypoints: bool | None = None, durable: bool = True,
                original_ds: Dataset | None = None) -> PixelOutcome:
    """Replace the faces in every frame of `path` and write the result to `target`.

    header_ds is the de-identified header (from the header stage); original_study and
    original_sop are the source's UIDs, used only to derive keyed values. Burned-in text is
    covered in the same pass (dicom_deid.text, profile.burned_in_text); original_ds, the
    source's header, gives redact-phi the values to look for. method "none" leaves the faces
    and runs the text stage alone. Raises PixelStageError or dicom_deid.video.VideoError with
    a PHI-free message.
    """
    from dicom_deid.faces import FaceReplacer
    from dicom_deid.video import open_frames, write_frames

    want_keypoints = profile.keypoints if keypoints is None else keypoints
    # Keypoints are measured beside a face replacement; text alone does not write an SR.
    want_keypoints = want_keypoints and method != "none"
    text = _text_stage(profile, original_ds)
    faces_on = method != "none"
    if text is None and not faces_on:
        raise PixelStageError("neither faces nor burned-in text were asked for")
    status = PixelStatus(burned_in_annotation_cleaned=text is not None, faces_cleaned=faces_on,
                         method=method if faces_on else None)
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
                                donor_seed=donor_seed(key, original_study), fps=fps) \
            if faces_on else _NoFaces()
        extract_original = extract_output = None
        if want_keypoints:
            from dicom_deid.keypoints import KeypointExtractor

            extract_original = KeypointExtractor(face=True, fps=fps)
            extract_output = KeypointExtractor(face=True, fps=fps)

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
                    yield out
                    t0 = time.monotonic()

        replaced = frames()
        if text is not None:
            # One pass: the face stage's output frames go through the text stage on their way
            # to the encoder (it holds up to key_interval frames).
            replaced = text.stream(replaced)
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
    if text is not None:
        report["text"] = text.close().as_dict()
    outcome = PixelOutcome(status=status, video=target, sop_instance_uid=new_uid, report=report)
    if want_keypoints:
        outcome.keypoints = originals
        outcome.sr, report["invariance"] = _keypoint_sr(
            target, originals, outputs, faces_report, profile, key, original_study, original_sop)
    return outcome


# Video and photographs get the text stage by default (issue 18); other pixels that may show a
# face (secondary capture, multi-frame images) when the profile asks for clean-pixel-data.
_TEXT_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.77.1.1",    # VL endoscopic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.4",    # VL photographic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.5",    # ophthalmic photography
    "1.2.840.10008.5.1.4.1.1.77.1.7",    # dermoscopic photography
)


def text_applies(profile: Profile, original_ds: Dataset | None) -> bool:
    """Whether the burned-in text stage runs on this instance (its pixels may show a face)."""
    if original_ds is None or getattr(profile, "burned_in_text", "off") == "off":
        return False
    if "clean-pixel-data" in profile.options:
        return True
    from dicom_deid.video.syntaxes import MPEG_SYNTAXES

    sop_class = str(original_ds.get("SOPClassUID", "") or "")
    meta = getattr(original_ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return syntax in MPEG_SYNTAXES or any(sop_class == p or sop_class.startswith(p + ".")
                                           for p in _TEXT_SOP_PREFIXES)


def _text_stage(profile: Profile, original_ds: Dataset | None):
    """The burned-in text stage for this instance, or None."""
    if not text_applies(profile, original_ds):
        return None
    mode = profile.burned_in_text
    from dicom_deid.text import PhiTerms, TextStage

    return TextStage(mode, PhiTerms.from_dataset(original_ds) if mode == "redact-phi" else None,
                     inplace=True)


class _NoFaces:
    """Stands in for the face stage when only text is cleaned: frames pass unchanged."""

    def __init__(self) -> None:
        from dicom_deid.faces import FacesReport

        self.report = FacesReport(method="none")

    def stream(self, frames):
        from dicom_deid.faces import FrameResult

        for index, rgb in enumerate(frames):
            self.report.frames += 1
            yield rgb, rgb.copy(), FrameResult(index=index, faces=[], fallback=False, leak=False)

    def close(self):
        return self.report


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
