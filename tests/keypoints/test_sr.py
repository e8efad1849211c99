"""The keypoint SR: valid (dciodvfy, dsrdump), referencing the video's frames, points exact."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_deid.keypoints import (
    FACE_CONTOUR_POINTS,
    SETS,
    KeypointSRError,
    build_keypoint_sr,
    invariance,
    read_keypoint_sr,
)
from dicom_deid.keypoints.sr import METRIC_CODES, SET_CODES
from tests.helpers import dciodvfy_errors, require_tool
from tests.keypoints.conftest import synthetic_keypoints, video_header


def _build(header, keypoints, tmp_path: Path, **kwargs) -> tuple[Path, object]:
    metrics = invariance(keypoints, keypoints, fallback_frames=2, leak_frames=1)
    sr = build_keypoint_sr(header, keypoints, metrics, series_uid=generate_uid(),
                           sop_uid=generate_uid(), **kwargs)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path, sr


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _scoords(ds) -> list[tuple[str, int, str, int]]:
    """(set code, frame number, referenced SOP instance, number of points) per SCOORD."""
    out = []
    for item in _walk(ds.ContentSequence):
        if item.ValueType != "SCOORD":
            continue
        (child,) = item.ContentSequence
        assert child.RelationshipType == "SELECTED FROM" and child.ValueType == "IMAGE"
        (ref,) = child.ReferencedSOPSequence
        assert item.GraphicType == "MULTIPOINT"
        out.append((item.ConceptNameCodeSequence[0].CodeValue, int(ref.ReferencedFrameNumber),
                    ref.ReferencedSOPInstanceUID, len(item.GraphicData) // 2))
    return out


def test_sr_is_valid_and_readable(header, keypoints, tmp_path: Path) -> None:
    path, _ = _build(header, keypoints, tmp_path)
    assert dciodvfy_errors(path) == []
    dsrdump = require_tool("dsrdump")
    proc = subprocess.run([dsrdump, "-Ei", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MULTIPOINT" in proc.stdout
    assert "Face mesh keypoints" in proc.stdout


@pytest.mark.parametrize("highdicom", [True, False])
def test_points_read_back_exactly_with_their_frames(header, keypoints, tmp_path: Path,
                                                    highdicom: bool) -> None:
    path, _ = _build(header, keypoints, tmp_path)
    back = read_keypoint_sr(path, highdicom=highdicom)
    assert sorted(back) == list(range(1, len(keypoints) + 1))
    for index, kp in enumerate(keypoints):
        frame = back[index + 1]
        assert sorted(frame) == sorted(kp.present())
        for name in kp.present():
            got = frame[name]
            assert got.dtype == np.float32 and got.shape == (SETS[name], 2)
            assert np.array_equal(got, kp.get(name)[:, :2]), (index, name)


def test_frame_references_and_evidence(header, keypoints, tmp_path: Path) -> None:
    path, _ = _build(header, keypoints, tmp_path)
    ds = dcmread(path)
    codes = {code: name for name, (code, _) in SET_CODES.items()}
    scoords = _scoords(ds)
    assert {uid for _, _, uid, _ in scoords} == {header.SOPInstanceUID}
    expected = {(code, i + 1) for code, name in codes.items()
                for i, kp in enumerate(keypoints) if kp.get(name) is not None}
    assert {(code, frame) for code, frame, _, _ in scoords} == expected
    assert len(scoords) == len(expected), "one SCOORD per frame and set"
    for code, _, _, n in scoords:
        assert n == SETS[codes[code]]
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == header.StudyInstanceUID
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == header.SeriesInstanceUID
    (sop,) = series.ReferencedSOPSequence
    assert (sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID) == \
        (header.SOPClassUID, header.SOPInstanceUID)


def test_sr_belongs_to_the_deidentified_study(header, keypoints, tmp_path: Path) -> None:
    path, _ = _build(header, keypoints, tmp_path)
    ds = dcmread(path)
    assert ds.StudyInstanceUID == header.StudyInstanceUID
    assert ds.SeriesInstanceUID != header.SeriesInstanceUID
    assert ds.Modality == "SR"
    for attr in ("PatientName", "PatientID", "StudyDate", "PatientIdentityRemoved",
                 "DeidentificationMethod"):
        assert ds[attr].value == header[attr].value, attr
    # Content date follows the (possibly shifted) video, not the day the SR was written.
    assert ds.ContentDate == header.ContentDate
    schemes = {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}
    assert "99DCMDEID" in schemes


def test_point_order_and_metrics_are_in_the_report(header, keypoints, tmp_path: Path) -> None:
    path, _ = _build(header, keypoints, tmp_path)
    ds = dcmread(path)
    items = list(_walk(ds.ContentSequence))
    orders = [i.TextValue for i in items if i.ValueType == "TEXT"
              and i.ConceptNameCodeSequence[0].CodeValue == "KP-ORDER"]
    assert len(orders) == len(SETS)
    assert any("0 nose; 1 left_eye_inner" in t and "32 right_foot_index" in t for t in orders)
    assert any("478 points" in t for t in orders)
    nums = {i.ConceptNameCodeSequence[0].CodeValue:
            (float(i.MeasuredValueSequence[0].NumericValue),
             i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0])
            for i in items if i.ValueType == "NUM"}
    value, unit = nums[METRIC_CODES["face_nme_percent"][0]]
    assert value == 0.0 and (unit.CodeValue, unit.CodingSchemeDesignator) == ("%", "UCUM")
    value, unit = nums[METRIC_CODES["fallback_frames"][0]]
    assert value == 2 and unit.CodeValue == "{frames}"
    assert nums[METRIC_CODES["leak_frames"][0]][0] == 1
    assert nums[METRIC_CODES["body_displacement_px"][0]][1].CodeValue == "{pixels}"
    assert nums["KP-STEP"][0] == 1


def test_frame_step_subsamples(header, keypoints, tmp_path: Path) -> None:
    path, _ = _build(header, keypoints, tmp_path, frame_step=5)
    back = read_keypoint_sr(path)
    assert sorted(back) == [1, 6, 11]
    assert np.array_equal(back[6]["pose"], keypoints[5].pose[:, :2])
    assert dciodvfy_errors(path) == []


def test_undefined_metrics_are_left_out(header, tmp_path: Path) -> None:
    kps = synthetic_keypoints(4, missing_every=1)     # no face anywhere
    metrics = invariance(kps, kps)
    assert metrics.face_nme_percent is None
    sr = build_keypoint_sr(header, kps, metrics, series_uid=generate_uid(),
                           sop_uid=generate_uid())
    codes = {i.ConceptNameCodeSequence[0].CodeValue for i in _walk(sr.ContentSequence)}
    assert METRIC_CODES["face_nme_percent"][0] not in codes
    assert METRIC_CODES["body_displacement_px"][0] in codes
    assert "face" not in {s for f in read_keypoint_sr(sr).values() for s in f}


def test_bad_inputs_are_refused(header, keypoints) -> None:
    kwargs = {"series_uid": generate_uid(), "sop_uid": generate_uid()}
    with pytest.raises(KeypointSRError, match="frame_step"):
        build_keypoint_sr(header, keypoints, None, frame_step=0, **kwargs)
    with pytest.raises(KeypointSRError, match="video has 12 frames"):
        build_keypoint_sr(header, synthetic_keypoints(13), None, **kwargs)
    no_uid = copy.deepcopy(header)
    del no_uid.SOPInstanceUID
    with pytest.raises(KeypointSRError, match="SOPInstanceUID"):
        build_keypoint_sr(no_uid, keypoints, None, **kwargs)
    keypoints[1].pose[3, 0] = np.nan
    with pytest.raises(KeypointSRError, match="frame 2: pose"):
        build_keypoint_sr(header, keypoints, None, **kwargs)


def test_reading_another_sr_is_refused(header, keypoints, tmp_path: Path) -> None:
    path, _ = _build(header, keypoints, tmp_path)
    ds = dcmread(path)
    ds.ConceptNameCodeSequence[0].CodeValue = "126000"
    ds.ConceptNameCodeSequence[0].CodingSchemeDesignator = "DCM"
    ds.ConceptNameCodeSequence[0].CodeMeaning = "Imaging Measurement Report"
    with pytest.raises(KeypointSRError, match="not a dicom-deid keypoint report"):
        read_keypoint_sr(ds)
    with pytest.raises(KeypointSRError, match="not a dicom-deid keypoint report"):
        read_keypoint_sr(ds, highdicom=False)


def test_header_without_optional_patient_attributes(keypoints) -> None:
    header = video_header(12)
    for attr in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ContentDate",
                 "ContentTime"):
        delattr(header, attr)
    before = [elem.tag for elem in header]
    sr = build_keypoint_sr(header, keypoints, None, series_uid=generate_uid(),
                           sop_uid=generate_uid())
    assert [elem.tag for elem in header] == before, "the caller's dataset is not modified"
    assert sr.PatientID == header.PatientID
    assert len(read_keypoint_sr(sr)) == 12


def test_face_subset(header, keypoints, tmp_path: Path) -> None:
    path, _ = _build(header, keypoints, tmp_path, face_points=FACE_CONTOUR_POINTS)
    assert dciodvfy_errors(path) == []
    back = read_keypoint_sr(path)
    index = list(FACE_CONTOUR_POINTS)
    assert np.array_equal(back[2]["face"], keypoints[1].face[index, :2])
    assert np.array_equal(back[2]["pose"], keypoints[1].pose[:, :2])
    texts = [i.TextValue for i in _walk(dcmread(path).ContentSequence)
             if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "KP-INDICES"]
    assert texts == ["Subset of the 478 points above; the SCOORDs hold these indices in this "
                     "order: " + " ".join(map(str, index))]
    with pytest.raises(KeypointSRError, match="face_points"):
        build_keypoint_sr(header, keypoints, None, series_uid=generate_uid(),
                          sop_uid=generate_uid(), face_points=[0, 0, 1])


def test_sr_of_measured_keypoints(header, tmp_path: Path) -> None:
    """Keypoints as the extractor gives them (float32 from MediaPipe) survive the round trip."""
    from dicom_deid.keypoints import KeypointExtractor
    from tests.keypoints.test_extractor import _scene

    with KeypointExtractor(hands=False) as ex:
        kps = [ex.extract(_scene()) for _ in range(2)]
    assert kps[1].face is not None and kps[1].pose is not None
    header.NumberOfFrames = 2
    path, _ = _build(header, kps, tmp_path)
    assert dciodvfy_errors(path) == []
    back = read_keypoint_sr(path)
    for name in ("face", "pose"):
        assert np.array_equal(back[2][name], kps[1].get(name)[:, :2])


def test_sr_rewritten_with_another_transfer_syntax(header, keypoints, tmp_path: Path) -> None:
    """The frames are held as encoded bytes; saving as implicit VR re-encodes them."""
    from pydicom.uid import ImplicitVRLittleEndian

    _, sr = _build(header, keypoints, tmp_path)
    sr.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "implicit.dcm"
    sr.save_as(path, enforce_file_format=True)
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    back = read_keypoint_sr(ds)
    assert np.array_equal(back[2]["face"], keypoints[1].face[:, :2])
    assert dciodvfy_errors(path) == []


def test_single_frame_image_is_referenced_without_frame_number(tmp_path: Path) -> None:
    header = video_header(1)
    del header.NumberOfFrames
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"   # VL Photographic Image
    kps = synthetic_keypoints(1, missing_every=0)
    path, _ = _build(header, kps, tmp_path)
    ds = dcmread(path)
    for item in _walk(ds.ContentSequence):
        if item.ValueType == "IMAGE":
            assert "ReferencedFrameNumber" not in item.ReferencedSOPSequence[0]
    assert dciodvfy_errors(path) == []
    back = read_keypoint_sr(path)
    assert list(back) == [1]
    assert np.array_equal(back[1]["face"], kps[0].face[:, :2])
    with pytest.raises(KeypointSRError, match="2 frames of keypoints but the video has 1"):
        build_keypoint_sr(header, synthetic_keypoints(2), None, series_uid=generate_uid(),
                          sop_uid=generate_uid())
