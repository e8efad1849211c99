"""Quirky but valid files pass; duplicates never overwrite; burned-in annotation fails closed
(issue 16, defects 2, 6 and 7). Inputs are pydicom's bundled test files, from the installed
package folder (never get_testdata_files, which may download)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from dicom_deid.cli import main
from dicom_deid.header import DeidentificationError, deidentify, load_key, load_profile
from dicom_deid.keypoints import build_keypoint_sr
from dicom_deid.pipeline import StudyOptions, process_study

PYDICOM_DATA = Path(pydicom.data.__file__).parent
TEST_FILES = PYDICOM_DATA / "test_files"


def _file(name: str, folder: Path = TEST_FILES) -> Path:
    path = folder / name
    if not path.is_file():
        pytest.skip(f"pydicom's test file {name} is not installed")
    return path


def _run(files: list[Path], tmp_path: Path, key_file: Path, profile="basic", registry=None):
    return process_study(files, tmp_path / "out", StudyOptions(profile), load_key(key_file),
                         tmp_path / "q", registry=registry)


def test_trailing_sequence_delimiter_after_pixel_data(tmp_path: Path, key_file: Path) -> None:
    source = tmp_path / "trailing.dcm"
    shutil.copyfile(_file("CT_small.dcm"), source)
    with source.open("ab") as handle:
        handle.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # a stray top-level (FFFE,E0DD)
    result = _run([source], tmp_path, key_file)
    assert result.ok, result.failures
    out = dcmread(result.outputs[0])
    assert out.PixelData == dcmread(_file("CT_small.dcm")).PixelData
    assert all(elem.tag.group != 0xFFFE for elem in out)


def test_deflated_secondary_capture_through_the_face_stage(tmp_path: Path, key_file: Path) -> None:
    # A grey 8-bit SC is outside the default face scope; the wide scope sends it through
    # the face stage, whose frame reader cannot seek in a deflated file.
    profile = tmp_path / "wide.yaml"
    profile.write_text("profile: wide\nbase: basic\nface_scope: secondary-capture\nkeypoints: false\n")
    source = _file("image_dfl.dcm")
    result = _run([source], tmp_path, key_file, profile=profile)
    assert result.ok, result.failures
    out = dcmread(result.outputs[0])
    assert out.PixelData == dcmread(source).PixelData, "no face: pixels kept"
    assert str(out.file_meta.TransferSyntaxUID) == str(dcmread(source).file_meta.TransferSyntaxUID)


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrKoreanMulti.dcm"])
def test_keypoint_sr_with_an_empty_first_character_set(name: str, key_file: Path) -> None:
    ds = dcmread(_file(name, PYDICOM_DATA / "charset_files"))
    assert ds.SpecificCharacterSet[0] == ""
    header = deidentify(ds, load_profile("basic"), load_key(key_file)).dataset
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"
    header.StudyDescription = str(ds.PatientName)   # text only the source's charset can read
    sr = build_keypoint_sr(header, [{}], None, series_uid="2.25.1", sop_uid="2.25.2")
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert sr.StudyDescription == str(ds.PatientName)


def test_unreadable_element_acts_by_its_action_or_names_the_element(key_file: Path) -> None:
    ds = dcmread(_file("CT_small.dcm"))
    key, profile = load_key(key_file), load_profile("basic")
    birth = BaseTag(0x00100030)   # Patient's Birth Date: Z under the basic profile
    ds._dict[birth] = RawDataElement(birth, "XX", 4, b"ABCD", 0, False, True)
    out = deidentify(ds, profile, key)
    assert out.dataset.PatientBirthDate in ("", None)

    study = BaseTag(0x0020000D)   # Study Instance UID: U, which needs the value
    ds._dict[study] = RawDataElement(study, "XX", 4, b"1.23", 0, False, True)
    with pytest.raises(DeidentificationError, match=r"\(0020,000D\)") as caught:
        deidentify(ds, profile, key)
    assert "1.23" not in str(caught.value)


def test_duplicates_never_overwrite(tmp_path: Path, key_file: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    first = shutil.copyfile(_file("MR_small.dcm"), inputs / "a.dcm")
    resend = shutil.copyfile(first, inputs / "b.dcm")
    other = shutil.copyfile(_file("MR_small_RLE.dcm"), inputs / "c.dcm")   # same SOP UID
    assert dcmread(other).SOPInstanceUID == dcmread(first).SOPInstanceUID
    registry: dict[str, str] = {}
    result = _run([first, resend, other], tmp_path, key_file, registry=registry)
    assert len(result.outputs) == 1 and result.duplicates == 1
    assert [f.path.name for f in result.failures] == ["c.dcm"]
    assert "duplicate SOP Instance UID" in result.failures[0].reason
    written = result.outputs[0].read_bytes()
    assert dcmread(result.outputs[0]).PixelData == dcmread(first).PixelData

    # A later run into the same output: the identical instance is stored once more as it
    # was (listed, not rewritten); the different one is still refused.
    again = _run([other, first], tmp_path, key_file)
    assert [f.path.name for f in again.failures] == ["c.dcm"]
    assert again.outputs == result.outputs and again.outputs[0].read_bytes() == written


def test_an_output_cut_short_before_its_report_is_made_again(tmp_path: Path,
                                                            key_file: Path) -> None:
    """A job killed between an output and its report (at-least-once delivery runs it
    again, issue 22): the rerun writes the same file instead of quarantining the instance
    as a duplicate of itself."""
    source = _file("MR_small.dcm")
    [output] = _run([source], tmp_path, key_file).outputs
    written = output.read_bytes()
    output.with_suffix(".json").unlink()
    output.write_bytes(written[: len(written) // 2])  # whatever the killed run left
    again = _run([source], tmp_path, key_file)
    assert again.failures == [] and again.outputs == [output]
    assert output.read_bytes() == written
    assert json.loads(output.with_suffix(".json").read_text())["source_digest"]


def test_cli_counts_duplicates(tmp_path: Path, key_file: Path, capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copyfile(_file("MR_small.dcm"), inputs / "a.dcm")
    shutil.copyfile(_file("MR_small.dcm"), inputs / "b.dcm")
    shutil.copyfile(_file("MR_small_expb.dcm"), inputs / "c.dcm")
    code = main(["deidentify", str(inputs), "--output", str(tmp_path / "out"),
                 "--key-file", str(key_file)])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 identical re-send(s)" in captured.out
    assert "1 input(s) re-used the SOP Instance UID" in captured.out
    assert "c.dcm" in captured.err and "duplicate SOP Instance UID" in captured.err


def _burned_in(tmp_path: Path) -> Path:
    ds = dcmread(_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    path = tmp_path / "burned.dcm"
    ds.save_as(path)
    return path


def test_burned_in_annotation_is_quarantined_by_default(tmp_path: Path, key_file: Path) -> None:
    assert load_profile("basic").burned_in_annotation == "quarantine"
    result = _run([_burned_in(tmp_path)], tmp_path, key_file)
    assert not result.outputs
    assert "BurnedInAnnotation is YES" in result.failures[0].reason


def test_burned_in_annotation_warn(tmp_path: Path, key_file: Path) -> None:
    profile = tmp_path / "warn.yaml"
    profile.write_text("profile: warn\nbase: basic\nburned_in_annotation: warn\n")
    result = _run([_burned_in(tmp_path)], tmp_path, key_file, profile=profile)
    assert result.ok, result.failures
    report = json.loads(result.reports[0].read_text())
    assert any("BurnedInAnnotation is YES" in w for w in report["warnings"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\nbase: basic\nburned_in_annotation: ignore\n")
    with pytest.raises(ValueError, match="burned_in_annotation"):
        load_profile(bad)


def test_dicomdir_is_quarantined_not_skipped(tmp_path: Path, key_file: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copyfile(_file("DICOMDIR-implicit", TEST_FILES / "dicomdirtests"), inputs / "DICOMDIR")
    result = _run([inputs / "DICOMDIR"], tmp_path, key_file)
    assert "DICOMDIR" in result.failures[0].reason


@pytest.mark.slow
def test_h264_video_with_a_trailing_delimiter(tmp_path: Path, key_file: Path) -> None:
    """The issue's case: `transcode` read it, `deidentify` quarantined it (NotImplementedError)."""
    from tests.pipeline.face_video import make_face_video

    video, _ = make_face_video(tmp_path / "clip.dcm", frames=4)
    with video.open("ab") as handle:
        handle.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    profile = tmp_path / "blur.yaml"
    profile.write_text("profile: blur\nbase: basic\nfaces: blur\nkeypoints: false\n")
    result = _run([video], tmp_path, key_file, profile=profile)
    assert result.ok, result.failures
    report = json.loads(result.reports[0].read_text())
    assert report["faces"]["frames"] == 4 and report["pixels"]["pixels_modified"] is True
