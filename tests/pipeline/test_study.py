"""The header-only path of one study: the bundled sample through process_study and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_deid.cli import main
from dicom_deid.header import load_key
from dicom_deid.header.keys import default_state_dir
from dicom_deid.pipeline import StudyOptions, process_study
from tests.helpers import REPO, new_dciodvfy_errors

SAMPLE = REPO / "tests" / "data" / "sample"
# Values make_sample.py invents beside the UIDs; none may survive de-identification.
INVENTED = ("Doe^Jane", "SAMPLE-MRN-4711", "19670412", "NHS-999-000-4711", "ACC-20230914-77")


def _sample_phi() -> list[str]:
    values: list[str] = []
    for path in sorted(SAMPLE.glob("*.dcm")):
        ds = dcmread(path)
        values += [str(ds.PatientName), str(ds.PatientID), str(ds.SOPInstanceUID),
                   str(ds.StudyInstanceUID)]
        if ds.get("AccessionNumber"):
            values.append(str(ds.AccessionNumber))
    return [v for v in values if v] + list(INVENTED)


def test_sample_study_header_only(tmp_path: Path, key_file: Path) -> None:
    files = sorted(SAMPLE.glob("*.dcm"))
    result = process_study(files, tmp_path / "out", StudyOptions("basic"), load_key(key_file),
                           tmp_path / "q")
    assert result.ok, result.failures
    assert len(result.outputs) == len(files) == len(result.reports)
    phi = _sample_phi()
    for out in result.outputs:
        raw = out.read_bytes()
        for value in phi:
            assert value.encode() not in raw, f"{value!r} survived in {out.name}"
        ds = dcmread(out)
        assert ds.PatientIdentityRemoved == "YES"
        assert out.parent.name == ds.SeriesInstanceUID
        assert out.parent.parent.name == ds.StudyInstanceUID
        assert out.stem == ds.SOPInstanceUID
    for report in result.reports:
        text = report.read_text()
        for value in phi:
            assert value not in text
        data = json.loads(text)
        assert data["pixels"]["faces_cleaned"] is False


def test_outputs_are_stable_across_runs(tmp_path: Path, key_file: Path) -> None:
    files = sorted(SAMPLE.glob("*.dcm"))
    key = load_key(key_file)
    a = process_study(files, tmp_path / "a", StudyOptions("basic"), key, tmp_path / "q")
    b = process_study(files, tmp_path / "b", StudyOptions("basic"), key, tmp_path / "q")
    assert [p.relative_to(tmp_path / "a") for p in a.outputs] == \
        [p.relative_to(tmp_path / "b") for p in b.outputs]


def test_bad_inputs_are_quarantined_with_their_reason(tmp_path: Path, key_file: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = shutil.copy(SAMPLE / "CT-01-01.dcm", inputs / "good.dcm")
    truncated = inputs / "truncated.dcm"
    truncated.write_bytes((SAMPLE / "CT-01-02.dcm").read_bytes()[:700])
    text = inputs / "notes.txt"
    text.write_text("not DICOM at all\n")
    q = tmp_path / "q"
    result = process_study([good, truncated, text], tmp_path / "out", StudyOptions("basic"),
                           load_key(key_file), q)
    assert len(result.outputs) == 1
    assert {f.path.name for f in result.failures} == {"truncated.dcm", "notes.txt"}
    for failure in result.failures:
        assert failure.quarantined is not None and failure.quarantined.exists()
        assert failure.quarantined.read_bytes() == failure.path.read_bytes()
        reason = Path(str(failure.quarantined) + ".reason.txt").read_text()
        assert failure.path.name in reason and failure.reason in reason
    assert truncated.exists() and text.exists(), "inputs must never be moved or changed"


def test_cli_deidentify_sample(tmp_path: Path, key_file: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["deidentify", str(SAMPLE), "--output", str(out), "--key-file", str(key_file)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "5 instance(s) of 1 study(ies)" in captured.out
    for value in _sample_phi():
        assert value not in captured.out + captured.err
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 5
    source = {str(dcmread(p).SOPClassUID): p for p in SAMPLE.glob("*.dcm")}
    for path in written:
        original = source[str(dcmread(path).SOPClassUID)]
        assert new_dciodvfy_errors(original, path) == []


def test_cli_reports_failures_and_exits_1(tmp_path: Path, key_file: Path, capsys) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 10)
    code = main(["deidentify", str(bad), str(tmp_path / "missing.dcm"), "--output",
                 str(tmp_path / "out"), "--key-file", str(key_file)])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.dcm" in err and "missing.dcm" in err
    # The quarantine holds the inputs' PHI: never inside the output, and private.
    quarantine = default_state_dir() / "quarantine" / "cli"
    assert (quarantine / "bad.dcm.reason.txt").exists()
    assert quarantine.stat().st_mode & 0o777 == 0o700
    assert not (tmp_path / "out" / "quarantine").exists()
    assert str(quarantine) in err


def test_unknown_face_method_is_refused(tmp_path: Path, key_file: Path) -> None:
    with pytest.raises(SystemExit):
        main(["deidentify", str(SAMPLE), "--output", str(tmp_path), "--faces", "smudge"])
