"""The pixel stage of one instance: decode -> keypoints -> replace faces -> encode -> SR.

    context = InstanceContext(header=..., original=..., path=..., profile=..., pixels=..., key=...)
    outcome = clean_faces(context, target)

The caller (dicom_deid.deidentifier) has already de-identified the header; this module
re-encodes the frames with every face replaced (dicom_deid.faces), measures keypoints on the
original frames and on the output (dicom_deid.keypoints), and builds the keypoint Structured
Report. The re-encoded instance and the SR get UIDs derived from the site key
(docs/CONTRACTS.md), so a re-run or a re-send after a crash gives the same UIDs. Nothing here
writes anything but the target file (atomically, through dicom_deid.video) and returns the SR
dataset to the caller.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_deid.atomic import publish
from dicom_deid.errors import DeidError
from dicom_deid.header import PixelStatus, Profile, SiteKey, mark_pixels
from dicom_deid.header.keys import donor_seed, keypoint_sr_uids
from dicom_deid.onnx_device import ModelSettings
from dicom_deid.policy import PixelPolicy
from dicom_deid.progress import start_frames

if TYPE_CHECKING:
    from dicom_deid.faces import FaceReplacer, FrameResult

LOG = logging.getLogger(__name__)

__all__ = ["InstanceContext", "PixelOutcome", "PixelStageError", "clean_faces", "donor_seed",
           "make_replacer", "text_applies"]


class PixelStageError(DeidError):
    """The pixel work an instance needs cannot be done; the message carries no PHI."""


@dataclass(frozen=True)
class InstanceContext:
    """One instance on its way through the pixel stage.

    header:   the de-identified header (header stage); the written instance's header
    original: the dataset as read: the frames where the file cannot be streamed
              (_frame_source), the values redact-phi looks for, the UIDs keyed values derive
              from (never written)
    path:     the file to stream the frames from; None: the frames come from `original`
    profile:  the header profile (options, date mode: what the header says was done)
    pixels:   how the pixels are cleaned (the profile's PixelPolicy, with the caller's
              face method and shape)
    date_offset_days: the patient's date shift under the date-shift option (the SR follows it)
    runtime:  the device and face engine every model of this instance is built with
    durable:  the written video survives a power cut once clean_faces returns (fsync of the file
              and of its folder after the rename; the node needs it)
    """

    header: Dataset
    original: Dataset
    path: Path | None
    profile: Profile
    pixels: PixelPolicy
    key: SiteKey
    date_offset_days: int | None = None
    durable: bool = True
    runtime: ModelSettings = field(default_factory=ModelSettings)

    @property
    def method(self) -> str:
        return self.pixels.faces

    @property
    def original_study(self) -> str:
        return str(self.original.StudyInstanceUID)

    @property
    def original_sop(self) -> str:
        return str(self.original.SOPInstanceUID)


@dataclass
class PixelOutcome:
    """What the pixel stage did to one instance (PHI-free, JSON-ready through `report`).

    written_header: the header of the file written at `video` (read back once for the
    fidelity check and reused for the SR); None when nothing was written."""

    status: PixelStatus
    video: Path
    sop_instance_uid: str
    sr: Dataset | None = None
    keypoints: list | None = None
    report: dict[str, Any] = field(default_factory=dict)
    written_header: Dataset | None = None


def make_replacer(pixels: PixelPolicy, key: SiteKey, original_study_uid: str,
                  fps: float, runtime: ModelSettings | None = None) -> FaceReplacer:
    """The face stage of one instance of a study: the study's donor from the key (two studies
    of one patient get unrelated donors), the geometry blend where the method takes one."""
    from dicom_deid.faces import FaceReplacer

    return FaceReplacer(method=pixels.faces, shape=pixels.shape_for(pixels.faces),
                        donor_seed=donor_seed(key, original_study_uid), fps=fps,
                        runtime=runtime)


def _original_face_landmarks(result: FrameResult) -> list:
    return [f.landmarks for f in result.faces if f.landmarks is not None]


def _frame_source(context: InstanceContext) -> Path | Dataset:
    """The file, for the frame reader to stream from; the dataset pydicom read where the file
    cannot be streamed: deflated (the reader seeks into the file for Pixel Data, which a
    deflated file does not allow), or encoded in another VR encoding than its transfer syntax
    says (pydicom notices and reads it; the reader, which trusts the syntax, would not)."""
    original, path = context.original, context.path
    if path is None:
        return original
    meta = getattr(context.header, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax == DeflatedExplicitVRLittleEndian:
        return original
    if syntax is not None and syntax.is_transfer_syntax:
        implicit, _ = original.original_encoding
        if implicit is not None and implicit != syntax.is_implicit_VR:
            return original
    return path


def clean_faces(context: InstanceContext, target: Path) -> PixelOutcome:
    """Replace the faces in every frame of the instance and write the result to `target`.

    Burned-in text is covered in the same pass (dicom_deid.text, pixels.burned_in_text);
    method "none" leaves the faces and runs the text stage alone. The instance keeps the
    header stage's SOP Instance UID (the key's one mapping of the original, which every
    reference to it uses too). When no frame changed (no face found, no leak covered, no text
    covered), nothing is written and `status.pixels_modified` is False: the caller keeps the
    original Pixel Data bit for bit. Raises PixelStageError or dicom_deid.video.VideoError
    with a PHI-free message.
    """
    import numpy as np

    from dicom_deid.faces.dicom_pass import replace_and_write
    from dicom_deid.video import VideoError, open_frames

    pixels, profile, header_ds = context.pixels, context.profile, context.header
    method = pixels.faces
    # Keypoints are measured beside a face replacement; text alone does not write an SR.
    want_keypoints = pixels.keypoints and method != "none"
    text = _text_stage(pixels, profile, context.original, context.runtime)
    faces_on = method != "none"
    if text is None and not faces_on:
        raise PixelStageError("neither faces nor burned-in text were asked for")
    status = PixelStatus(burned_in_annotation_cleaned=text is not None, faces_cleaned=faces_on,
                         method=method if faces_on else None)
    template = header_ds.copy()
    # The header must say what was done before the frames are written with it.
    mark_pixels(template, profile, status)
    new_uid = str(header_ds.SOPInstanceUID)
    keypoints_s = [0.0]
    changed = [0]
    originals: list = []
    outputs: list = []
    # Encoded beside the target and renamed into place only if some frame changed.
    work = target.with_name(f".{target.name}.faces.tmp")
    work.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    source = _frame_source(context)
    try:
        reader = open_frames(source)
    except VideoError:
        if source is context.original:
            raise
        # The reader walks the file's elements itself to find Pixel Data; where it loses its
        # way (a VR that is not there) and pydicom did not, the dataset pydicom read serves.
        reader = open_frames(context.original)
    with reader:
        info = reader.info
        fps = float(info.fps or 25.0)
        replacer = make_replacer(pixels, context.key, context.original_study, fps,
                                 context.runtime) \
            if faces_on else _NoFaces()
        extract_original = extract_output = None
        if want_keypoints:
            from dicom_deid.keypoints import KeypointExtractor

            extract_original = KeypointExtractor(face=True, fps=fps, runtime=context.runtime)
            extract_output = KeypointExtractor(face=True, fps=fps, runtime=context.runtime)

        tick = start_frames(info.frames)

        def each(rgb, out, result) -> None:
            t1 = time.monotonic()
            if out is not rgb and not np.array_equal(out, rgb):
                changed[0] += 1
            if extract_original is not None and extract_output is not None:
                originals.append(extract_original.extract(
                    rgb, face_landmarks=_original_face_landmarks(result)))
                # Sets the original lacks cannot be compared, so they are not run on the
                # output.
                outputs.append(extract_output.extract(out, like=originals[-1]))
                keypoints_s[0] += time.monotonic() - t1
            tick()

        try:
            # The original is never forwarded and its output UID is this instance's own:
            # no self-reference; the source's own Source Image items stay, remapped.
            done = replace_and_write(
                reader, replacer, template, work, info, sop_instance_uid=new_uid, source=None,
                each=each,
                # One pass: the face stage's output frames go through the text stage on their
                # way to the encoder (it holds up to key_interval frames).
                then=text.stream if text is not None else None)
        except BaseException:
            work.unlink(missing_ok=True)   # a crashed run's leftover, if any
            raise
        finally:
            for extractor in (extract_original, extract_output):
                if extractor is not None:
                    extractor.close()
    written, faces_report = done.written, done.faces
    total = time.monotonic() - start
    if faces_report.frames != written.frames:
        work.unlink(missing_ok=True)
        raise PixelStageError(
            f"{faces_report.frames} frames went through the face stage but {written.frames} "
            "were written"
        )
    text_report = text.close() if text is not None else None
    modified = changed[0] > 0 or (text_report is not None and text_report.frames_redacted > 0)
    changes: list[str] = []
    written_header = None
    if modified:
        changes, written_header = _check_fidelity(header_ds, work)
        publish(work, target, durable=context.durable)
    else:
        work.unlink(missing_ok=True)
        status = PixelStatus(burned_in_annotation_cleaned=status.burned_in_annotation_cleaned,
                             faces_cleaned=status.faces_cleaned, method=status.method,
                             pixels_modified=False)
    # Decoding and encoding run in their own threads (dicom_deid.overlap), overlapping the
    # face stage: "decode_encode" is the wall time left over, not the codecs' own cost.
    faces_s = done.faces_s
    report: dict[str, Any] = {
        "faces": faces_report.as_dict(),
        "frames_changed": changed[0],
        "video": written.to_dict() if modified else {"kept": "original pixel data, bit for bit"},
        "timings_s": {"total": round(total, 3),
                      "faces": round(faces_s, 3),
                      "keypoints": round(keypoints_s[0], 3),
                      "decode_encode": round(total - faces_s - keypoints_s[0], 3)},
    }
    report["video"].pop("path", None)
    if changes:
        # What the re-encode changed beyond the faces, stated (the header says it too:
        # PhotometricInterpretation, transfer syntax, LossyImageCompression).
        report["video"]["changed"] = changes
    if text_report is not None:
        report["text"] = text_report.as_dict()
    outcome = PixelOutcome(status=status, video=target, sop_instance_uid=new_uid, report=report,
                           written_header=written_header)
    if want_keypoints:
        outcome.keypoints = originals
        video_ds = written_header if written_header is not None else template
        outcome.sr, report["invariance"] = _keypoint_sr(
            video_ds, originals, outputs, faces_report, pixels, context)
        sr_dates_follow_profile(outcome.sr, video_ds, profile.date_mode,
                                context.date_offset_days)
    return outcome


# Video and photographs get the text stage by default (issue 18); other pixels that may show a
# face (secondary capture, multi-frame images) when the profile asks for clean-pixel-data.
_TEXT_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.77.1.1",    # VL endoscopic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.4",    # VL photographic image and video
    "1.2.840.10008.5.1.4.1.1.77.1.5",    # ophthalmic photography
    "1.2.840.10008.5.1.4.1.1.77.1.7",    # dermoscopic photography
)


def text_applies(pixels: PixelPolicy, options: tuple[str, ...],
                 original: Dataset | None) -> bool:
    """Whether the burned-in text stage runs on this instance (its pixels may show a face);
    options: the profile's PS3.15 options."""
    if original is None or pixels.burned_in_text == "off":
        return False
    if "clean-pixel-data" in options:
        return True
    from dicom_deid.video.syntaxes import MPEG_SYNTAXES

    sop_class = str(original.get("SOPClassUID", "") or "")
    meta = getattr(original, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return syntax in MPEG_SYNTAXES or any(sop_class == p or sop_class.startswith(p + ".")
                                           for p in _TEXT_SOP_PREFIXES)


def _text_stage(pixels: PixelPolicy, profile: Profile, original: Dataset | None,
                runtime: ModelSettings):
    """The burned-in text stage for this instance, or None."""
    if not text_applies(pixels, profile.options, original):
        return None
    mode = pixels.burned_in_text
    from dicom_deid.text import PhiTerms, TextStage

    return TextStage(mode, PhiTerms.from_dataset(original) if mode == "redact-phi" else None,
                     inplace=True, device=runtime.device)


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


# Type 1 in the SR Document General module: a dummy where the date option removes dates.
_SR_REQUIRED_DATES = {0x00080023: "DA", 0x00080033: "TM"}


def sr_dates_follow_profile(sr: Dataset, video_ds: Dataset, mode: str,
                            offset_days: int | None) -> None:
    """The SR's dates and times as the profile treats any other date (issue 16: for a routing
    node, processing time is close to exam time).

    An attribute the de-identified video has (ContentDate, StudyDate ...) takes the video's
    value, which the header stage already removed, dummied or shifted. The rest are the
    builder's own timestamps (InstanceCreationDate/Time, ContributionDateTime ...): kept
    under retain-longitudinal-full-dates, shifted with the patient under
    retain-longitudinal-modified-dates (times stay: the shift is whole days), removed
    otherwise, except ContentDate/Time, which the SR must have: a dummy.
    """
    from dicom_deid.header.values import DUMMY_TEXT, shift_da, shift_dt

    def walk(ds: Dataset, top: bool) -> None:
        for tag in list(ds.keys()):  # noqa: SIM118 (iterating a Dataset decodes every element)
            if type(ds.get_item(tag)) is RawDataElement:
                continue  # the encoded keypoint coordinates (keypoints/encode.py): no dates
            elem = ds[tag]
            if elem.VR == "SQ":
                for item in elem.value or ():
                    walk(item, False)
                continue
            if elem.VR not in ("DA", "DT", "TM"):
                continue
            tag = int(elem.tag)  # type: ignore[assignment]
            if top and tag in video_ds:
                ds[tag] = copy.deepcopy(video_ds[tag])
                if tag in _SR_REQUIRED_DATES and not ds[tag].value:
                    ds[tag].value = DUMMY_TEXT[_SR_REQUIRED_DATES[tag]]  # emptied (Z)
                continue
            if mode == "keep":
                continue
            if mode == "shift" and offset_days is not None:
                if elem.VR == "TM":
                    continue
                shift = shift_da if elem.VR == "DA" else shift_dt
                moved = shift(str(elem.value or ""), offset_days)
                elem.value = moved if moved is not None else DUMMY_TEXT[elem.VR]
                continue
            if top and tag in _SR_REQUIRED_DATES:
                elem.value = DUMMY_TEXT[_SR_REQUIRED_DATES[tag]]
            else:
                del ds[elem.tag]

    walk(sr, True)


# The pixel module attributes whose change the header must state (bit depth, colour model).
_FIDELITY = ("BitsStored", "SamplesPerPixel", "PixelRepresentation")


def _check_fidelity(source_ds: Dataset, written: Path) -> tuple[list[str], Dataset]:
    """A face was replaced: refuse an output that lost bit depth or signedness, which the
    8-bit colour face stage would do to any other image (nothing a reader could trust).
    Returns the other changes, to be reported (colour model, transfer syntax, lossy step),
    and the written file's header."""
    out = dcmread(written, stop_before_pixels=True)
    lost = []
    for keyword in _FIDELITY:
        before, after = source_ds.get(keyword), out.get(keyword)
        if keyword == "SamplesPerPixel" and before is not None and int(before) == 1:
            continue  # a grey image may come back as colour: no information lost
        if before is not None and after is not None and int(before) != int(after):
            lost.append(f"{keyword} {int(before)} -> {int(after)}")
    if lost:
        written.unlink(missing_ok=True)
        raise PixelStageError(
            "a face was found, but replacing it would change the image's " + ", ".join(lost)
            + "; the instance is not written with the face or with a degraded image"
        )
    changes = []
    for keyword in ("PhotometricInterpretation", "LossyImageCompression"):
        before, after = str(source_ds.get(keyword, "") or ""), str(out.get(keyword, "") or "")
        if before != after:
            changes.append(f"{keyword} {before or '(none)'} -> {after or '(none)'}")
    before_ts = str(getattr(getattr(source_ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    after_ts = str(out.file_meta.get("TransferSyntaxUID", ""))
    if before_ts and before_ts != after_ts:
        changes.append(f"TransferSyntaxUID {before_ts} -> {after_ts}")
    return changes, out


def _keypoint_sr(video_ds: Dataset, originals: list, outputs: list, faces_report: Any,
                 pixels: PixelPolicy, context: InstanceContext) -> tuple[Dataset, dict[str, Any]]:
    from dicom_deid.keypoints import build_keypoint_sr, invariance

    t0 = time.monotonic()
    metrics = invariance(originals, outputs,
                         fallback_frames=faces_report.fallback_frames,
                         leak_frames=faces_report.leak_frames)
    series_uid, sop_uid = keypoint_sr_uids(context.key, context.original_study,
                                           context.original_sop)
    sr = build_keypoint_sr(video_ds, originals, metrics, series_uid=series_uid, sop_uid=sop_uid,
                           frame_step=pixels.keypoint_frame_step)
    summary = metrics.as_dict()
    summary["sr_build_s"] = round(time.monotonic() - t0, 3)
    return sr, summary
