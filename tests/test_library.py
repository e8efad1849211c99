"""The library API: dicom_deid.Deidentifier (docs/LIBRARY.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydicom import dcmread

import dicom_deid
from dicom_deid import Deidentifier, DeidError, Outcome
from dicom_deid.header import load_key
from dicom_deid.pipeline import StudyOptions, process_study
from tests.helpers import REPO

SAMPLE = REPO / "tests" / "data" / "sample"
INVENTED = ("Doe^Jane", "SAMPLE-MRN-4711", "19670412", "ACC-20230914-77")


def _phi(ds) -> list[str]:
    values = [str(ds.PatientName), str(ds.PatientID), str(ds.SOPInstanceUID),
              str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)]
    return [v for v in values if v]


def test_exports() -> None:
    assert set(dicom_deid.__all__) >= {"Deidentifier", "Outcome", "DeidError", "__version__"}
    for name in dicom_deid.__all__:
        assert getattr(dicom_deid, name) is not None


def test_dataset_in_dataset_out(tmp_path: Path, key_file: Path) -> None:
    original = dcmread(SAMPLE / "CT-01-01.dcm")
    before = copy.deepcopy(original)
    phi = _phi(original)
    outcome = Deidentifier("basic", key=key_file).deidentify(original)
    assert isinstance(outcome, Outcome)
    assert original == before, "the input dataset was modified"
    out = tmp_path / "out.dcm"
    outcome.dataset.save_as(out, enforce_file_format=True)
    raw = out.read_bytes()
    for value in phi + list(INVENTED):
        assert value.encode() not in raw, f"{value!r} survived"
    assert outcome.dataset.PatientIdentityRemoved == "YES"
    assert outcome.dataset.PixelData == original.PixelData   # CT: pixels not touched
    assert outcome.status is None and outcome.video is None and outcome.sr is None
    report = str(outcome.report)
    for value in phi + list(INVENTED):
        assert value not in report
    assert outcome.report["pixels"]["may_show_face"] is False


def test_path_in_matches_dataset_in(key_file: Path) -> None:
    deid = Deidentifier("basic", key=key_file)
    from_path = deid.deidentify(SAMPLE / "CT-01-02.dcm")
    from_dataset = deid.deidentify(dcmread(SAMPLE / "CT-01-02.dcm"))
    assert from_path.dataset.SOPInstanceUID == from_dataset.dataset.SOPInstanceUID
    assert from_path.dataset.SOPInstanceUID.startswith("2.25.")
    assert from_path.report["actions"] == from_dataset.report["actions"]


def test_errors_are_deid_errors_without_phi(tmp_path: Path, key_file: Path) -> None:
    source = SAMPLE / "CT-01-01.dcm"
    phi = _phi(dcmread(source))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source.read_bytes()[:-64])
    deid = Deidentifier("basic", key=key_file)
    with pytest.raises(DeidError) as info:
        deid.deidentify(cut)
    assert "truncated" in str(info.value)
    for value in phi:
        assert value not in str(info.value)
    with pytest.raises(DeidError, match="face method") as bad:
        Deidentifier("basic", key=key_file, faces="smudge")
    assert isinstance(bad.value, ValueError)
    with pytest.raises(DeidError):
        Deidentifier("no-such-profile", key=key_file)


def test_pipeline_output_is_the_deidentifiers(tmp_path: Path, key_file: Path) -> None:
    """process_study with a Deidentifier or with StudyOptions writes the same bytes, and the
    instance it writes is the Deidentifier's dataset."""
    files = sorted(SAMPLE.glob("CT-0*.dcm"))
    key = load_key(key_file)
    a = process_study(files, tmp_path / "a", Deidentifier("basic", key=key), None, tmp_path / "q")
    b = process_study(files, tmp_path / "b", StudyOptions("basic"), key, tmp_path / "q")
    assert a.ok and b.ok
    assert [p.relative_to(tmp_path / "a") for p in a.outputs] == \
        [p.relative_to(tmp_path / "b") for p in b.outputs]
    for x, y in zip(a.outputs, b.outputs, strict=True):
        assert x.read_bytes() == y.read_bytes()
        # What the node's job records, known without reading the file back.
        meta = dcmread(x, stop_before_pixels=True).file_meta
        assert a.facts[x] == (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    outcome = Deidentifier("basic", key=key).deidentify(files[0])
    assert dcmread(a.outputs[0]).SOPInstanceUID == outcome.dataset.SOPInstanceUID


def test_face_video_in_memory_and_into_a_file(tmp_path: Path, key_file: Path) -> None:
    from tests.pipeline.face_video import PHI, make_face_video

    video, _ = make_face_video(tmp_path / "face.dcm", frames=6)
    profile = tmp_path / "profile.yaml"
    profile.write_text("profile: test-library\nbase: basic\nkeypoints: false\n")
    deid = Deidentifier(profile, key=key_file, faces="blur")
    original = dcmread(video)

    in_memory = deid.deidentify(original)
    assert in_memory.video is None
    assert in_memory.status is not None and in_memory.status.pixels_modified
    assert in_memory.faces_replaced > 0
    assert in_memory.report["frames_changed"] > 0
    assert "PixelData" in in_memory.dataset
    assert in_memory.dataset.PixelData != original.PixelData
    saved = tmp_path / "mem.dcm"
    in_memory.dataset.save_as(saved, enforce_file_format=True)
    raw = saved.read_bytes()
    for value in list(PHI.values()) + _phi(original):
        assert str(value).encode() not in raw

    target = tmp_path / "file" / "video.dcm"
    target.parent.mkdir()
    prepared = deid.prepare(video)
    to_file = deid.deidentify(prepared, video=target)
    assert to_file.video == target and target.exists()
    # Read once: the frames were streamed from the file; the input's Pixel Data value was
    # never read into memory.
    assert prepared.original.get_item(0x7FE00010, keep_deferred=True).value is None
    assert "PixelData" not in to_file.dataset      # the header of the file written
    assert to_file.dataset.SOPInstanceUID == in_memory.dataset.SOPInstanceUID
    assert to_file.transfer_syntax == str(dcmread(target).file_meta.TransferSyntaxUID)
    assert dcmread(target).PixelData == in_memory.dataset.PixelData
