"""The node with real peers: DCMTK sends, the node runs as a subprocess, Orthanc archives.

The tests use `faces: none` (header-only de-identification), which keeps them fast; the
face stage has its own tests, and a node test with faces belongs here once the pipeline
runs it.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_deid.header.keys import load_key
from tests.helpers import shared_dir
from tests.node.factory import PHI, make_instance, write_study
from tests.node.peers import Node, Orthanc, echoscu, storescu, wait_for

pytestmark = [pytest.mark.network, pytest.mark.slow]

FAST = {"default_rule": {"profile": "basic", "faces": "none"}}


def _destination(archive: Orthanc) -> list[dict]:
    return [{"name": "archive", "ae_title": archive.aet, "host": "127.0.0.1",
             "port": archive.dicom_port}]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield orthanc
    orthanc.stop()


@pytest.fixture()
def clean_archive(archive):
    archive.clear()
    return archive


def _sop_uids(archive: Orthanc) -> list[str]:
    return [t["SOPInstanceUID"] for t in archive.all_tags()]


def _phi_values(files: list[Path]) -> set[str]:
    """Identifying values of the inputs: names, IDs, dates of birth, UIDs."""
    values: set[str] = set()
    keywords = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                "InstitutionName", "ReferringPhysicianName", "PatientAddress",
                "OtherPatientIDs", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                "PerformingPhysicianName", "OperatorsName")
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        for kw in keywords:
            value = ds.get(kw)
            if value:
                for part in (value if isinstance(value, list | tuple) else [value]):
                    text = str(part).strip()
                    if len(text) >= 5:
                        values.add(text)
        if "OtherPatientIDsSequence" in ds:
            for item in ds.OtherPatientIDsSequence:
                if item.get("PatientID"):
                    values.add(str(item.PatientID))
    return values


def _assert_no_phi(text: str, phi: set[str], where: str) -> None:
    leaked = sorted(v for v in phi if v in text or v.replace("^", " ") in text)
    assert not leaked, f"PHI in {where}: {leaked}"


def _expected_uids(key, files: list[Path]) -> set[str]:
    return {key.uid(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)) for f in files}


def test_video_study_reaches_archive_deidentified_without_phi(tmp_path, clean_archive):
    archive = clean_archive
    video = shared_dir() / "data" / "dicom" / "video"
    names = ("A_h264_high_es_720x576.dcm", "A_h264_high_mp4box_720x576.dcm",
             "B_mpeg2_mpml_720x576.dcm", "D_hevc_main_720x576.dcm")
    if all((video / n).exists() for n in names):
        files = [video / n for n in names]
    else:  # pydicom's own multi-frame test files (no video syntax among them)
        from pydicom.data import get_testdata_file

        files = [Path(get_testdata_file(n)) for n in ("emri_small_jpeg_2k_lossless.dcm",
                                                       "SC_rgb_rle_2frame.dcm")]
    node = Node(tmp_path / "node", {**FAST, "destinations": _destination(archive)}).start()
    try:
        storescu(files, node.port)
        key = load_key(node.state_dir / "site.key")
        expected = _expected_uids(key, files)
        wait_for(lambda: set(_sop_uids(archive)) >= expected, 60,
                 what="the de-identified videos in the archive")
        tags = archive.all_tags()
        assert {t["SOPInstanceUID"] for t in tags} == expected
        assert all(t["StudyInstanceUID"].startswith("2.25.") for t in tags)
        sent_syntaxes = {str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                         for f in files}
        stored = {archive.text(f"/instances/{i}/metadata/TransferSyntax")
                  for i in archive.instances()}
        assert stored == sent_syntaxes  # stored and forwarded as received: no transcoding
        phi = _phi_values(files)
        _assert_no_phi(json.dumps(tags), phi, "the archive")
        wait_for(lambda: node.states() == {"forwarded": len(files)}, 20,
                 what="all instances forwarded")
        status = node.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["destinations"]["archive"]["sent"] == len(files)
        assert report["instances"]["forwarded"] == len(files)
        # Retention: delivered originals leave the spool.
        wait_for(lambda: not list((node.state_dir / "spool").glob("??/*.dcm")), 20,
                 what="the spool to be emptied")
    finally:
        node.stop()
    _assert_no_phi(node.log(), phi, "the node log")
    _assert_no_phi(node.audit(), phi, "the audit log")
    _assert_no_phi(status.stdout, phi, "dicom-deid status")
    assert '"event": "deidentified"' in node.audit() and '"event": "forwarded"' in node.audit()
    journal = node.state_dir / "journal.sqlite"
    assert journal.stat().st_mode & 0o777 == 0o600
    assert node.state_dir.stat().st_mode & 0o777 == 0o700


def test_kill9_mid_study_then_restart_loses_nothing(tmp_path, clean_archive):
    archive = clean_archive
    study = write_study(tmp_path / "study", 40, size=64)
    node = Node(tmp_path / "node", {**FAST, "destinations": _destination(archive)}).start()
    # 1. Killed while receiving: what was acknowledged must arrive without a re-send.
    sender = subprocess.Popen(
        ["storescu", "-v", "-R", "-aet", "PACS", "-aec", "DICOM-DEID", "127.0.0.1",
         str(node.port), *map(str, study.files)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: sum(node.states().values()) >= 10, 60, interval=0.02,
             what="10 instances received")
    node.kill9()
    output = sender.communicate(timeout=60)[0]
    acked = _acknowledged(output)
    assert 10 <= len(acked) < len(study.files), output[-2000:]
    node.start()
    key = load_key(node.state_dir / "site.key")
    acked_uids = {key.uid(study.sop_uids[study.files.index(f)]) for f in acked}
    wait_for(lambda: set(_sop_uids(archive)) >= acked_uids, 60,
             what="every acknowledged instance in the archive")

    # 2. The PACS re-sends the study; killed again while it is being processed/forwarded.
    storescu(study.files, node.port)
    wait_for(lambda: node.states().get("processing") or node.states().get("done"), 60,
             interval=0.02, what="a job to start")
    node.kill9()
    node.start()
    expected = {key.uid(s) for s in study.sop_uids}
    wait_for(lambda: set(_sop_uids(archive)) == expected, 90,
             what="the whole study in the archive")
    assert len(archive.instances()) == len(study.files)  # each once, same UIDs after re-send
    [study_uid] = {t["StudyInstanceUID"] for t in archive.all_tags()}
    assert study_uid == key.uid(study.study_uid)
    wait_for(lambda: set(node.states()) == {"forwarded"}, 30, what="journal to settle")
    node.stop()


def _acknowledged(storescu_output: str) -> list[Path]:
    """Files storescu -v reports as stored with success, in order."""
    acked, current = [], None
    for line in storescu_output.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = Path(m.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
            current = None
    return acked


def test_archive_down_then_up_is_retried_and_delivered(tmp_path):
    archive = Orthanc(tmp_path / "orthanc")  # configured, not started yet
    study = write_study(tmp_path / "study", 5)
    node = Node(tmp_path / "node", {**FAST, "destinations": _destination(archive)}).start()
    try:
        storescu(study.files, node.port)
        wait_for(lambda: node.journal("SELECT COUNT(*) FROM sends WHERE attempts >= 2")[0][0] == 5,
                 60, what="failed delivery attempts")
        report = json.loads(node.cli("status", "--json").stdout)
        assert report["destinations"]["archive"]["pending"] == 5
        assert any("archive" in (f["subject"] or "") for f in report["recent_failures"])
        archive.start()
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: set(_sop_uids(archive)) == {key.uid(s) for s in study.sop_uids}, 60,
                 what="delivery after the archive came up")
        wait_for(lambda: node.states() == {"forwarded": 5}, 20, what="forwarded")
    finally:
        node.stop()
        archive.stop()


def test_unknown_calling_ae_is_refused_and_several_associations_work(tmp_path, clean_archive):
    archive = clean_archive
    node = Node(tmp_path / "node", {**FAST, "destinations": _destination(archive)}).start()
    try:
        refused = echoscu(node.port, calling="INTRUDER")
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout
        assert "calling AE 'INTRUDER' is not in listen.allowed_calling_aets" in node.log()
        study = write_study(tmp_path / "evil", 2)
        proc = storescu(study.files, node.port, calling="INTRUDER", check=False)
        assert proc.returncode != 0
        assert node.journal("SELECT COUNT(*) FROM instances")[0][0] == 0

        studies = [write_study(tmp_path / f"s{i}", 6) for i in range(4)]
        errors: list[BaseException] = []

        def send(s, calling):
            try:
                storescu(s.files, node.port, calling=calling)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(s, "PACS" if i % 2 else "PACS2"))
                   for i, s in enumerate(studies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        key = load_key(node.state_dir / "site.key")
        expected = {key.uid(s) for st in studies for s in st.sop_uids}
        wait_for(lambda: set(_sop_uids(archive)) == expected, 90, what="four studies archived")
        assert len({t["StudyInstanceUID"] for t in archive.all_tags()}) == 4
    finally:
        node.stop()


def test_malformed_instances_are_quarantined_with_reason_and_retry(tmp_path, clean_archive):
    archive = clean_archive
    folder = tmp_path / "bad"
    folder.mkdir()
    good = write_study(tmp_path / "good", 2)
    from pydicom.uid import generate_uid

    no_study = make_instance(generate_uid(), generate_uid(), generate_uid(), 1)
    del no_study.StudyInstanceUID
    no_study.save_as(folder / "no_study.dcm", enforce_file_format=True)
    no_series = make_instance(good.study_uid, generate_uid(), generate_uid(), 3)
    del no_series.SeriesInstanceUID
    no_series.save_as(folder / "no_series.dcm", enforce_file_format=True)

    node = Node(tmp_path / "node", {**FAST, "destinations": _destination(archive)}).start()
    try:
        storescu([*good.files, folder / "no_study.dcm", folder / "no_series.dcm"], node.port)
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: set(_sop_uids(archive)) == {key.uid(s) for s in good.sop_uids}, 60,
                 what="the good instances archived")
        wait_for(lambda: node.states().get("quarantined") == 2, 30, what="two quarantined")
        reasons = {r[0] for r in node.journal(
            "SELECT reason FROM instances WHERE state = 'quarantined'")}
        assert any("no StudyInstanceUID" in r for r in reasons), reasons
        assert any("SeriesInstanceUID" in r for r in reasons), reasons
        status = node.cli("status")
        assert "quarantine: 2 instances" in status.stdout, status.stdout
        assert "SeriesInstanceUID" in status.stdout
        ids = re.findall(r"^\s+(I\d+) study S-", status.stdout, re.MULTILINE)
        assert ids
        retried = node.cli("retry", *ids)
        assert retried.returncode == 0 and "1 instances" in retried.stdout, retried.stdout
        # Still broken: processed again and back in quarantine, never forwarded.
        wait_for(lambda: node.journal("SELECT COUNT(*) FROM jobs WHERE state = 'done'")[0][0] >= 2,
                 30, what="the retried instance processed again")
        wait_for(lambda: node.states().get("quarantined") == 2, 30, what="re-quarantined")
        assert len(archive.instances()) == 2
        refused = node.cli("retry", "I9999")
        assert refused.returncode == 1 and "I9999" in refused.stderr
    finally:
        node.stop()
    _assert_no_phi(node.log() + node.audit(), set(PHI.values()) - {"OT"}, "logs")
