"""`dicom-deid route test` and `dicom-deid lookup`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_deid.cli import main
from dicom_deid.header.keys import load_key
from dicom_deid.node.audit import study_token
from dicom_deid.node.journal import Journal, ReceivedInstance
from tests.helpers import REPO

SAMPLE = REPO / "tests" / "data" / "sample"


def test_route_test_names_the_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "destinations:\n  - {name: archive, ae_title: ARCHIVE, host: 127.0.0.1, port: 4242}\n"
        "rules:\n"
        "  - {name: ct-from-pacs, match: {calling_aet: PACS, modality: CT}, profile: basic,"
        " options: [retain-uids], faces: none}\n"
        "default_rule: null\n")
    ct = SAMPLE / "CT-01-01.dcm"
    sr = SAMPLE / "SR-99-01.dcm"
    assert main(["route", "test", str(ct), str(sr), "--config", str(config),
                 "--calling", "PACS"]) == 0
    out = capsys.readouterr().out
    assert f"{ct}: modality CT" in out and "rule 'ct-from-pacs': profile basic" in out
    assert "options retain-uids" in out and "destinations archive" in out
    assert f"{sr}: modality SR" in out and "no rule matches" in out
    # The study description is used for matching but never printed.
    description = str(dcmread(ct, stop_before_pixels=True).get("StudyDescription", "") or "")
    assert not description or description not in out
    assert main(["route", "test", str(ct), "--config", str(config), "--calling", "OTHER"]) == 0
    assert "no rule matches" in capsys.readouterr().out


def _journal_with_sample(tmp_path: Path, key_file: Path) -> tuple[Path, str, str]:
    state = tmp_path / "state"
    state.mkdir()
    ds = dcmread(SAMPLE / "CT-01-01.dcm", stop_before_pixels=True)
    study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
    journal = Journal(state / "journal.sqlite")
    token = study_token(load_key(key_file), study)
    journal.record_received(ReceivedInstance(
        study_uid=study, study_token=token, sop_instance_uid=sop,
        sop_class_uid=str(ds.SOPClassUID), transfer_syntax="1.2.840.10008.1.2.1",
        modality="CT", study_description="", calling_aet="PACS", called_aet="DICOM-DEID",
        path="spool/x.dcm", size=1))
    journal.close()
    config = tmp_path / "node.yaml"
    config.write_text(f"state_dir: {state}\nkey_file: {key_file}\n")
    return config, study, token


def test_lookup_is_audited_without_the_answer(tmp_path: Path, key_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config, study, token = _journal_with_sample(tmp_path, key_file)
    key = load_key(key_file)
    for value in (token, key.uid(study)):
        assert main(["lookup", value, "--reason", "ticket 42", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert f"original StudyInstanceUID: {study}" in out and token in out
    sop = str(dcmread(SAMPLE / "CT-01-01.dcm", stop_before_pixels=True).SOPInstanceUID)
    assert main(["lookup", key.uid(sop), "--reason", "ticket 43", "--config", str(config)]) == 0
    assert f"original SOPInstanceUID:   {sop}" in capsys.readouterr().out
    assert main(["lookup", "S-0000", "--reason", "typo", "--config", str(config)]) == 1
    audit = (tmp_path / "state" / "audit.log").read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    assert [r["event"] for r in records] == ["lookup"] * 4
    assert [r["found"] for r in records] == [True, True, True, False]
    assert records[0]["reason"] == "ticket 42" and records[0]["user"]
    assert study not in audit and sop not in audit


def test_lookup_needs_a_reason(tmp_path: Path, key_file: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    config, _, token = _journal_with_sample(tmp_path, key_file)
    with pytest.raises(SystemExit):
        main(["lookup", token, "--config", str(config)])
    assert main(["lookup", token, "--reason", " ", "--config", str(config)]) == 2


def test_dry_run_table_hides_input_values_off_terminal(
        tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = SAMPLE / "CT-01-01.dcm"
    ds = dcmread(source, stop_before_pixels=True)
    assert main(["deidentify", "--dry-run", str(source), "--key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "input values <hidden>" in out
    for value in (str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID)):
        assert value not in out
    row = next(line for line in out.splitlines() if line.startswith("(0010,0010)"))
    assert "PatientName" in row and "<hidden>" in row and row.split()[-1] == "changed"
    key = load_key(key_file)
    assert key.uid(str(ds.StudyInstanceUID)) in out  # the after column is always shown
    assert not list(tmp_path.glob("**/*.dcm"))  # nothing written


def test_dry_run_shows_input_values_on_a_terminal(key_file: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dicom_deid.commands.dryrun import dry_run
    from dicom_deid.header import load_profile

    source = SAMPLE / "CT-01-01.dcm"
    name = str(dcmread(source, stop_before_pixels=True).PatientName)
    assert dry_run([source], load_profile("basic"), load_key(key_file), show_input=True) == 0
    assert name in capsys.readouterr().out
