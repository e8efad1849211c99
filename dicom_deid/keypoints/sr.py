"""The keypoint Structured Report: a highdicom Comprehensive SR beside the de-identified video.

    sr = build_keypoint_sr(video_ds, keypoints, metrics, series_uid=..., sop_uid=..., frame_step=1)
    frames = read_keypoint_sr(sr_or_path)      # {frame number: {set: N x 2 float32}}

Content tree (concepts in the private scheme 99DCMDEID, declared in the Coding Scheme
Identification Sequence, or DCM where a code exists):

    CONTAINER  Keypoint report                                   (99DCMDEID KP-REPORT)
      CONTAINS TEXT  Algorithm Name = MediaPipe                  (DCM 111001)
      CONTAINS TEXT  Algorithm Version = 0.10.21                 (DCM 111003)
      CONTAINS TEXT  Keypoint coordinates = how to read the points
      CONTAINS NUM   Frame step {frames}
      CONTAINS CONTAINER  Keypoint invariance                    (99DCMDEID KP-INVARIANCE)
        CONTAINS NUM  face landmark NME (%), body displacement ({pixels}, %), hand
                      displacement ({pixels}), face detection retention (%), fallback frames,
                      leak frames, frames compared ({frames})
      CONTAINS CONTAINER  <set>: Body pose / Left hand / Right hand / Face mesh keypoints
        CONTAINS TEXT  Point order = "0 nose; 1 left_eye_inner; ..."
        CONTAINS NUM   Number of points {points}
        CONTAINS SCOORD MULTIPOINT <set>  (column, row pairs in point order)   one per frame
          SELECTED FROM IMAGE  Source of Measurement (DCM 121112): the video, ReferencedFrameNumber

A frame without a set has no SCOORD for it: absence is "not found", never zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_deid.errors import DeidError
from dicom_deid.keypoints.encode import ScoordFrames, dataset_item
from dicom_deid.keypoints.metrics import InvarianceMetrics
from dicom_deid.keypoints.points import SETS, FrameKeypoints, point_order_text

SCHEME = "99DCMDEID"
_CONTENT_SEQUENCE = Tag(0x0040, 0xA730)
SERIES_NUMBER = 9901
MANUFACTURER = "dicom-deid"
MEDIAPIPE_VERSION = "0.10.21"

# Set name -> (code value, code meaning) in the private scheme.
SET_CODES: dict[str, tuple[str, str]] = {
    "pose": ("KP-POSE", "Body pose keypoints"),
    "left_hand": ("KP-LHAND", "Left hand keypoints"),
    "right_hand": ("KP-RHAND", "Right hand keypoints"),
    "face": ("KP-FACE", "Face mesh keypoints"),
}

# Metric attribute -> (code value, code meaning, UCUM unit, unit meaning).
METRIC_CODES: dict[str, tuple[str, str, str, str]] = {
    "face_nme_percent": ("KP-FACE-NME", "Face landmark normalized mean error", "%", "%"),
    "face_nme_max_percent": ("KP-FACE-NMEMAX", "Face landmark normalized mean error, maximum",
                             "%", "%"),
    "face_retention_percent": ("KP-FACE-RETAIN", "Face detection retention", "%", "%"),
    "body_displacement_px": ("KP-BODY-DISP", "Body keypoint mean displacement",
                             "{pixels}", "pixels"),
    "body_displacement_percent": ("KP-BODY-DISPN",
                                  "Body keypoint mean displacement, percent of frame diagonal",
                                  "%", "%"),
    "hand_displacement_px": ("KP-HAND-DISP", "Hand keypoint mean displacement",
                             "{pixels}", "pixels"),
    "fallback_frames": ("KP-FALLBACK", "Fallback frames", "{frames}", "frames"),
    "leak_frames": ("KP-LEAK", "Leak frames", "{frames}", "frames"),
    "frames": ("KP-FRAMES", "Frames compared", "{frames}", "frames"),
    "face_frames_original": ("KP-FACE-FRAMES", "Frames with a face in the original",
                             "{frames}", "frames"),
}

COORDINATES_TEXT = (
    "Each SCOORD MULTIPOINT holds one keypoint set of one frame of the referenced video, "
    "measured on the original frame before face replacement, as (column, row) pixel pairs in "
    "the set's point order, origin at the top-left corner of the top-left pixel. A set not "
    "found in a frame has no SCOORD for that frame. Pose points outside the frame are MediaPipe's "
    "estimates of hidden body parts and may lie outside the image. Depth (z) and pose visibility "
    "are not in this report; they are in the keypoint CSV."
)


class KeypointSRError(DeidError, ValueError):
    """The keypoint SR cannot be built or read; the message carries no PHI."""


def _code(value: str, meaning: str, scheme: str = SCHEME) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _unit(ucum: str, meaning: str) -> Any:
    return _code(ucum, meaning, "UCUM")


def _evidence(video_ds: Dataset) -> Dataset:
    for attr in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(video_ds.get(attr, "") or ""):
            raise KeypointSRError(f"the video dataset has no {attr}")
    # A new dataset over the same elements: the caller's dataset is never modified (pydicom's
    # Dataset.copy() shares the element dict), and pixel data is left behind.
    ev = Dataset()
    for elem in video_ds:
        if elem.tag != 0x7FE00010:
            ev.add(elem)
    _utf8_if_needed(ev)
    # highdicom reads these unconditionally; a de-identified header may have removed them.
    for attr in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                 "AccessionNumber", "StudyID", "StudyDate", "StudyTime"):
        if attr not in ev:
            setattr(ev, attr, None)
    return ev


def _utf8_if_needed(ev: Dataset) -> None:
    """highdicom takes one character set, or a list of its defined terms: an empty first
    value (the default repertoire with code extensions, e.g. \\ISO 2022 IR 87) or a
    combination it does not know is decoded here with the source's character set and
    re-declared as UTF-8, which holds every text the source could."""
    from highdicom.enum import SpecificCharacterSetValues

    charset = ev.get("SpecificCharacterSet")
    values = [charset] if isinstance(charset, str) else list(charset or [])
    try:
        for value in values:
            SpecificCharacterSetValues(str(value))
        if len(values) <= 1:
            return
    except ValueError:
        pass
    for _elem in ev:  # converting each element decodes its text with the source's charset
        pass
    ev.SpecificCharacterSet = "ISO_IR 192"


def _frame_count(video_ds: Dataset) -> int | None:
    try:
        return int(video_ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return None


def build_keypoint_sr(video_ds: Dataset, keypoints: Sequence[FrameKeypoints],
                      metrics: InvarianceMetrics | None, *, series_uid: str, sop_uid: str,
                      frame_step: int = 1, face_points: Sequence[int] | None = None,
                      series_number: int = SERIES_NUMBER, instance_number: int = 1) -> Dataset:
    """A Comprehensive SR (highdicom) of the keypoints of every `frame_step`-th frame.

    video_ds: the de-identified video (header only is enough); the SR takes its patient and
    study attributes and references it by SOP Class/Instance UID and frame number (keypoints[i]
    is frame i + 1; a single-frame image, without NumberOfFrames, is referenced without a frame
    number and read back as frame 1). metrics: the invariance check, or None to leave it out. face_points: write
    only these face mesh indices, in this order (e.g. FACE_CONTOUR_POINTS; the report lists
    them); None writes all 478.
    """
    import highdicom as hd
    from highdicom.sr import (
        CodedConcept,
        ContainerContentItem,
        ContentItem,
        ContentSequence,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )

    if not isinstance(frame_step, int) or isinstance(frame_step, bool) or frame_step < 1:
        raise KeypointSRError(f"frame_step must be a whole number >= 1, got {frame_step!r}")
    ev = _evidence(video_ds)
    face_index = None
    if face_points is not None:
        face_index = np.asarray(face_points, dtype=np.int64).reshape(-1)
        if face_index.size == 0 or face_index.min() < 0 or face_index.max() >= SETS["face"] \
                or len(set(face_index.tolist())) != face_index.size:
            raise KeypointSRError("face_points must be distinct indices in 0-477")
    total = _frame_count(video_ds)
    # A single-frame image is referenced without a frame number (PS3.3 C.17.3.2.1: Referenced
    # Frame Number is for multi-frame images only).
    multiframe = "NumberOfFrames" in video_ds
    if total is not None and len(keypoints) > total:
        raise KeypointSRError(
            f"{len(keypoints)} frames of keypoints but the video has {total} frames")
    contains = RelationshipTypeValues.CONTAINS
    class_uid, instance_uid = str(ev.SOPClassUID), str(ev.SOPInstanceUID)

    root = ContainerContentItem(_code("KP-REPORT", "Keypoint report"),
                                is_content_continuous=False)
    items = ContentSequence()
    items.append(TextContentItem(CodedConcept("111001", "DCM", "Algorithm Name"), "MediaPipe",
                                 relationship_type=contains))
    items.append(TextContentItem(CodedConcept("111003", "DCM", "Algorithm Version"),
                                 MEDIAPIPE_VERSION, relationship_type=contains))
    items.append(TextContentItem(_code("KP-COORDS", "Keypoint coordinates"), COORDINATES_TEXT,
                                 relationship_type=contains))
    items.append(NumContentItem(_code("KP-STEP", "Frame step"), frame_step,
                                _unit("{frames}", "frames"), relationship_type=contains))
    if metrics is not None:
        group = ContainerContentItem(_code("KP-INVARIANCE", "Keypoint invariance"),
                                     is_content_continuous=False, relationship_type=contains)
        values = ContentSequence()
        for attr, (code, meaning, ucum, unit_meaning) in METRIC_CODES.items():
            value = getattr(metrics, attr, None)
            if value is None or (isinstance(value, float) and not np.isfinite(value)):
                continue
            values.append(NumContentItem(_code(code, meaning), value,
                                         _unit(ucum, unit_meaning), relationship_type=contains))
        group.ContentSequence = values
        items.append(group)

    chosen = range(0, len(keypoints), frame_step)
    per_set: dict[str, list[tuple[int, np.ndarray]]] = {name: [] for name in SETS}
    for index in chosen:
        for set_name in SETS:
            points = keypoints[index].get(set_name)
            if points is None:
                continue
            xy = np.ascontiguousarray(points[:, :2], dtype=np.float32)
            if set_name == "face" and face_points is not None:
                xy = xy[face_index]
            if not np.isfinite(xy).all():
                raise KeypointSRError(f"frame {index + 1}: {set_name} has non-finite points")
            per_set[set_name].append((index + 1, xy))
    groups: dict[str, tuple[Any, list[Any]]] = {}
    for set_name, count in SETS.items():
        code, meaning = SET_CODES[set_name]
        group = ContainerContentItem(_code(code, meaning), is_content_continuous=False,
                                     relationship_type=contains)
        children: list[ContentItem] = [TextContentItem(
            _code("KP-ORDER", "Point order"), point_order_text(set_name),
            relationship_type=contains)]
        if set_name == "face" and face_index is not None:
            count = len(face_index)
            children.append(TextContentItem(
                _code("KP-INDICES", "Point indices"),
                "Subset of the 478 points above; the SCOORDs hold these indices in this order: "
                + " ".join(str(int(i)) for i in face_index), relationship_type=contains))
        children.append(NumContentItem(_code("KP-NPOINTS", "Number of points"), count,
                                       _unit("{points}", "points"), relationship_type=contains))
        group.ContentSequence = ContentSequence(children)
        items.append(group)
        groups[set_name] = (group, children)
    root.ContentSequence = items

    content_kwargs: dict[str, Any] = {}
    if video_ds.get("ContentDate"):
        # Keep the study's (possibly shifted) timeline rather than stamping today's date.
        content_kwargs["content_date"] = str(video_ds.ContentDate)
        if video_ds.get("ContentTime"):
            content_kwargs["content_time"] = str(video_ds.ContentTime).split(".")[0]
    sr = hd.sr.ComprehensiveSR(
        evidence=[ev],
        content=root,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="Keypoints (MediaPipe) of the de-identified video",
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=SCHEME, name="dicom-deid keypoint concepts",
            responsible_organization="dicom-deid")],
        **content_kwargs,
    )
    for set_name, (group, children) in groups.items():
        # The frames go in as encoded bytes (encode.py): as Datasets they would cost ~15 s and
        # ~300 MB for a minute of video. The element is set on the dataset, not through
        # highdicom's ContentSequence, which only takes content item objects.
        encoder = ScoordFrames((SET_CODES[set_name][0], SCHEME, SET_CODES[set_name][1]),
                               class_uid, instance_uid)
        value = b"".join([*(dataset_item(child) for child in children),
                          *(encoder.encode(frame if multiframe else None, xy)
                            for frame, xy in per_set[set_name])])
        group[_CONTENT_SEQUENCE] = RawDataElement(_CONTENT_SEQUENCE, "SQ", len(value), value,
                                                  0, False, True)
        # Declares the raw bytes' encoding (explicit VR little endian): pydicom then writes
        # them as they are instead of parsing them for VR correction, and re-encodes them if
        # the dataset is ever saved with another transfer syntax.
        group.set_original_encoding(False, True, group._character_set)
    sr.set_original_encoding(False, True, sr._character_set)
    # The SR belongs to the de-identified study: it says so, as the video does.
    for attr in ("PatientIdentityRemoved", "DeidentificationMethod",
                 "DeidentificationMethodCodeSequence", "LongitudinalTemporalInformationModified"):
        if attr in video_ds:
            sr[attr] = video_ds[attr]
    return sr


def read_keypoint_sr(source: Dataset | str | Path, *,
                     highdicom: bool = True) -> dict[int, dict[str, np.ndarray]]:
    """The points of a keypoint SR: {frame number: {set: N x 2 float32}}, exactly as stored.

    highdicom=True parses the document with highdicom (which checks it as an SR; a dataset
    passed in is converted in place); False walks it with pydicom alone, several times faster
    for long videos. Raises KeypointSRError if it is not a keypoint SR.
    """
    ds = source if isinstance(source, Dataset) else dcmread(source)
    if highdicom:
        from highdicom.sr import ComprehensiveSR

        root = ComprehensiveSR.from_dataset(ds, copy=False).content[0]
    else:
        root = ds
    concept = root.get("ConceptNameCodeSequence")
    if not concept or concept[0].get("CodeValue") != "KP-REPORT" \
            or concept[0].get("CodingSchemeDesignator") != SCHEME:
        raise KeypointSRError("not a dicom-deid keypoint report (root concept is not KP-REPORT)")
    by_code = {code: name for name, (code, _) in SET_CODES.items()}
    frames: dict[int, dict[str, np.ndarray]] = {}
    for group in root.get("ContentSequence", []):
        set_name = by_code.get(group.ConceptNameCodeSequence[0].CodeValue)
        if set_name is None or group.ValueType != "CONTAINER":
            continue
        for item in group.get("ContentSequence", []):
            if item.ValueType != "SCOORD":
                continue
            refs = item.ContentSequence[0].ReferencedSOPSequence[0]
            frame = int(refs.get("ReferencedFrameNumber", 1))
            xy = np.asarray(item.GraphicData, dtype=np.float64).reshape(-1, 2)
            frames.setdefault(frame, {})[set_name] = xy.astype(np.float32)
    return frames
