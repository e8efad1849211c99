"""The node with real peers: DCMTK sends, the node runs as a subprocess, Orthanc archives.

Most tests route with `faces: none` (header-only de-identification), which keeps them fast;
one sends a real video through the profile's default face method (the pixel stage), which is
the slowest test here (about a minute on two shared cores).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_deid.header.keys import load_key
from tests.helpers import REPO, shared_data, shared_dir
from tests.node.factory import PHI, make_instance, write_study
from tests.node.peers import (
    Node,
    Orthanc,
    echoscu,
    make_certificates,
    storescu,
    wait_for,
)

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
    missing = [n for n in names if not (video / n).exists()]
    if missing:
        # pydicom's test files hold no video syntax, and the ones it does not bundle would be
        # downloaded (no network in CI): nothing to stand in for these.
        pytest.skip(f"shared DICOM videos absent from {video}: {', '.join(missing)}")
    files = [video / n for n in names]
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
        wait_for(lambda: not [p for p in (node.state_dir / "outbox").rglob("*") if p.is_file()],
                 20, what="the outbox to be emptied (outputs and their reports)")
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
    try:
        _kill_and_resume(node, study, archive)
    finally:
        node.stop()


def _kill_and_resume(node: Node, study, archive: Orthanc) -> None:
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
    assert 1 <= len(acked) < len(study.files), output[-2000:]
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


def test_video_study_with_default_face_method(tmp_path, clean_archive):
    """The profile's default face method: the video is re-encoded under its keyed UID."""
    archive = clean_archive
    video = shared_data("dicom", "video", "D_hevc_main_720x576.dcm")
    node = Node(tmp_path / "node", {"default_rule": {"profile": "basic"},
                                    "destinations": _destination(archive)}).start()
    try:
        storescu([video], node.port)
        wait_for(lambda: node.states().get("forwarded") or node.states().get("quarantined"),
                 240, interval=1.0, what="the video processed")
        assert node.states() == {"forwarded": 1}, node.journal(
            "SELECT reason FROM instances WHERE state = 'quarantined'")
        key = load_key(node.state_dir / "site.key")
        sop = str(dcmread(video, stop_before_pixels=True).SOPInstanceUID)
        wait_for(lambda: key.uid(sop) in _sop_uids(archive), 30,
                 what="the re-encoded video in the archive")
        tags = archive.all_tags()
        [stored] = [t for t in tags if t["SOPInstanceUID"] == key.uid(sop)]
        assert stored["RecognizableVisualFeatures"] == "NO"
        assert stored["PatientIdentityRemoved"] == "YES"
        # Every other output (the keypoint SR) belongs to the same de-identified study.
        assert {t["StudyInstanceUID"] for t in tags} == {stored["StudyInstanceUID"]}
        phi = _phi_values([video])
        _assert_no_phi(json.dumps(tags), phi, "the archive")
        status = node.cli("status")
    finally:
        node.stop()
    _assert_no_phi(node.log() + node.audit() + status.stdout, phi, "logs and status")
    assert '"faces": "profile default"' in node.audit()


def test_a_job_past_job_timeout_is_stopped_quarantined_and_retried(tmp_path, clean_archive):
    """A study job that runs too long (here: any face video against a 1 s limit) has its
    worker stopped and its instances quarantined with the reason; after a restart with a
    realistic limit, `retry` delivers them."""
    archive = clean_archive
    video = shared_data("dicom", "video", "C_jpeg_baseline_multiframe_360x288.dcm")
    node = Node(tmp_path / "node", {"default_rule": {"profile": "basic"},
                                    "destinations": _destination(archive),
                                    "processing": {"job_timeout": 1, "max_attempts": 1}})
    node.start()
    try:
        storescu([video], node.port)
        wait_for(lambda: node.states().get("quarantined"), 120, interval=0.5,
                 what="the overdue job quarantined")
        [(reason,)] = node.journal("SELECT reason FROM instances WHERE state = 'quarantined'")
        assert "job_timeout (1 s)" in reason
        assert _sop_uids(archive) == []
        node.stop()
        node.config["processing"]["job_timeout"] = 600
        node.config_path.write_text(yaml.safe_dump(node.config, sort_keys=False))
        node.start()
        retried = node.cli("retry", "--all")
        assert retried.returncode == 0 and "1 instances" in retried.stdout
        wait_for(lambda: node.states() == {"forwarded": 1}, 240, interval=1.0,
                 what="the video delivered after retry")
        key = load_key(node.state_dir / "site.key")
        sop = str(dcmread(video, stop_before_pixels=True).SOPInstanceUID)
        assert key.uid(sop) in _sop_uids(archive)
    finally:
        node.stop()


def test_late_instance_joins_the_same_deidentified_study(tmp_path, clean_archive):
    archive = clean_archive
    study = write_study(tmp_path / "study", 2)
    node = Node(tmp_path / "node", {**FAST, "destinations": _destination(archive)}).start()
    try:
        storescu(study.files, node.port)
        wait_for(lambda: node.states() == {"forwarded": 2}, 60, what="first part forwarded")
        # The same study and series, one more image, after the study was processed.
        first = dcmread(study.files[0], stop_before_pixels=True)
        late_uid = generate_uid()
        late = make_instance(study.study_uid, str(first.SeriesInstanceUID), late_uid, 3)
        late.save_as(tmp_path / "late.dcm", enforce_file_format=True)
        storescu([tmp_path / "late.dcm"], node.port)
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: len(archive.instances()) == 3, 60, what="the late instance archived")
        tags = archive.all_tags()
        assert {t["SOPInstanceUID"] for t in tags} == {key.uid(u) for u in
                                                        [*study.sop_uids, late_uid]}
        assert {t["StudyInstanceUID"] for t in tags} == {key.uid(study.study_uid)}
        assert {t["SeriesInstanceUID"] for t in tags} == {key.uid(str(first.SeriesInstanceUID))}
        assert node.journal("SELECT COUNT(*) FROM jobs WHERE state = 'done'")[0][0] == 2
    finally:
        node.stop()


def test_tls_from_the_sender_and_to_the_archive(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    archive = Orthanc(tmp_path / "orthanc", tls=certs).start()
    tls_args = ("+tla", "+cf", str(certs.ca))  # TLS, server verified against our CA
    node = Node(tmp_path / "node", {
        **FAST,
        "listen": {"tls": {"cert": str(certs.cert), "key": str(certs.key)}},
        "destinations": [{**_destination(archive)[0], "tls": {"ca": str(certs.ca)}}],
    }, client_args=tls_args).start()
    try:
        plain = echoscu(node.port)
        assert plain.returncode != 0  # no TLS, no association
        study = write_study(tmp_path / "study", 3)
        storescu(study.files, node.port, extra=tls_args)
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: set(_sop_uids(archive)) == {key.uid(s) for s in study.sop_uids}, 60,
                 what="delivery over TLS")
        assert "(TLS)" in node.log()
    finally:
        node.stop()
        archive.stop()


def test_tls_listener_with_a_ca_admits_only_callers_with_a_certificate_it_signed(tmp_path):
    """listen.tls.ca: mutual TLS. A caller without a certificate, or with one from another CA,
    gets no association; one whose certificate the CA signed does (real DCMTK echoscu)."""
    certs = make_certificates(tmp_path / "certs")
    stranger = make_certificates(tmp_path / "stranger")
    trust = ("+cf", str(certs.ca))
    node = Node(tmp_path / "node", {
        **FAST,
        "listen": {"tls": {"cert": str(certs.cert), "key": str(certs.key), "ca": str(certs.ca)}},
    }, client_args=("+tls", str(certs.key), str(certs.cert), *trust)).start()
    try:
        anonymous = echoscu(node.port, extra=("+tla", *trust))
        assert anonymous.returncode != 0
        foreign = echoscu(node.port, extra=("+tls", str(stranger.key), str(stranger.cert), *trust))
        assert foreign.returncode != 0
        signed = echoscu(node.port, extra=("+tls", str(certs.key), str(certs.cert), *trust))
        assert signed.returncode == 0, signed.stdout + signed.stderr
    finally:
        node.stop()


def test_per_destination_queues_quarantine_after_n_attempts_and_retry(tmp_path, clean_archive):
    up = clean_archive
    down = Orthanc(tmp_path / "down", aet="DOWN")  # configured, not started
    destinations = [*_destination(up), {"name": "down", "ae_title": "DOWN",
                                        "host": "127.0.0.1", "port": down.dicom_port}]
    study = write_study(tmp_path / "study", 3)
    node = Node(tmp_path / "node", {
        **FAST, "destinations": destinations,
        "forward": {"max_attempts": 3, "initial_delay": 0.2, "max_delay": 0.4},
    }).start()
    try:
        storescu(study.files, node.port)
        key = load_key(node.state_dir / "site.key")
        expected = {key.uid(s) for s in study.sop_uids}
        # One destination down does not hold back the other.
        wait_for(lambda: set(_sop_uids(up)) == expected, 60, what="delivery to the live archive")
        wait_for(lambda: node.journal("SELECT COUNT(*) FROM sends WHERE destination = 'down'"
                                      " AND state = 'quarantined'")[0][0] == 3, 60,
                 what="the sends to the dead archive quarantined")
        assert node.journal("SELECT DISTINCT attempts FROM sends WHERE destination = 'down'") \
            == [(3,)]
        assert node.states() == {"done": 3}  # not forwarded until every destination has it
        report = json.loads(node.cli("status", "--json").stdout)
        assert report["destinations"]["archive"]["sent"] == 3
        assert report["destinations"]["down"]["quarantined"] == 3
        reasons = [i["reason"] for i in report["quarantine"]["items"]]
        assert len(reasons) == 3 and all("gave up after 3 attempts" in r for r in reasons)
        assert '"event": "quarantined"' in node.audit()

        down.start()
        retried = node.cli("retry", "--all")
        assert retried.returncode == 0 and "0 instances, 3 sends" in retried.stdout
        wait_for(lambda: set(_sop_uids(down)) == expected, 60, what="delivery after retry")
        wait_for(lambda: node.states() == {"forwarded": 3}, 20, what="forwarded")
        assert len(up.instances()) == 3  # the live archive was not sent them again
    finally:
        node.stop()
        down.stop()


def test_listener_limits_low_disk_and_unrouted_instances(tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    node = Node(tmp_path / "node", {
        "listen": {"max_pdu": 16384, "max_associations": 1, "max_instance_size": "8K"},
        "rules": [{"name": "pacs-only", "match": {"calling_aet": "PACS"}, "faces": "none"}],
        "default_rule": None,  # what no rule matches goes to quarantine
    }).start()
    try:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOM-DEID")
        assert assoc.is_established
        try:
            assert assoc.acceptor.maximum_length == 16384  # listen.max_pdu, as negotiated
            second = echoscu(node.port)
            assert second.returncode != 0, second.stdout
        finally:
            assoc.release()
        assert "listen.max_associations" in node.log()

        small = write_study(tmp_path / "small", 1, size=16)
        large = write_study(tmp_path / "large", 1, size=128)  # 16 KiB of pixels
        proc = storescu(large.files, node.port, check=False)
        assert "Refused: OutOfResources" in proc.stdout, proc.stdout  # 0xA700
        assert "larger than listen.max_instance_size" in node.log()
        # Far larger: cut off while it arrives (association aborted), not spooled whole.
        huge = write_study(tmp_path / "huge", 1, size=512)  # 256 KiB of pixels
        proc = storescu(huge.files, node.port, check=False)
        assert "Store Response (Success)" not in proc.stdout, proc.stdout
        wait_for(lambda: "exceeds listen.max_instance_size" in node.log(), 10,
                 what="the oversized reception cut off")
        storescu(small.files, node.port)
        other = write_study(tmp_path / "other", 1, size=16)
        storescu(other.files, node.port, calling="PACS2")
        wait_for(lambda: node.states() == {"done": 1, "quarantined": 1}, 30,
                 what="one processed, one unrouted")
        [(reason,)] = node.journal("SELECT reason FROM instances WHERE state = 'quarantined'")
        assert "no routing rule matched" in reason and "'PACS2'" in reason
        assert node.journal("SELECT COUNT(*) FROM instances")[0][0] == 2  # large not kept
    finally:
        node.stop()

    # Free disk below the low-water mark: new associations are refused with the reason.
    full = Node(tmp_path / "full", {"listen": {"min_free_disk": "1000T"}}).start(echo=False)
    try:
        refused = echoscu(full.port)
        assert refused.returncode != 0
        assert "below listen.min_free_disk" in full.log()
    finally:
        full.stop()


def test_embedded_default_runs_with_no_config(tmp_path):
    """`dicom-deid serve` with no file: 127.0.0.1:11112, any calling AE on loopback."""
    import os
    import socket
    import sys

    from pydicom.data import get_testdata_file

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 11112)) == 0:
            pytest.skip("port 11112 (the embedded default) is in use on this machine")
    env = {**os.environ, "DICOM_DEID_STATE": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dicom_deid.cli", "serve"], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()
        return echoscu(11112, calling="ANY-SENDER").returncode == 0

    try:
        wait_for(up, 60, what="the default node to answer C-ECHO")
        ct = Path(get_testdata_file("CT_small.dcm"))
        storescu([ct], 11112, calling="ANY-SENDER")
        status = subprocess.run([sys.executable, "-m", "dicom_deid.cli", "status"], env=env,
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert status.returncode == 0, status.stderr
        assert "DICOM-DEID@127.0.0.1:11112" in status.stdout
        assert "received 1" in status.stdout and "destinations: none configured" in status.stdout
        assert (tmp_path / "state" / "site.key").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    assert "processed 30 s after their last instance" in log_path.read_text()
