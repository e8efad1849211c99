"""STOW-RS to a real Orthanc (DICOMweb plugin, HTTP basic auth) from a running node.

The same guarantees as C-STORE (test_node_network.py): the de-identified study lands
as sent, a refused login or a dead archive is retried by the forwarder's policy and then
quarantined with nothing lost, and a kill -9 at any point loses nothing and duplicates
nothing.
"""

from __future__ import annotations

import json

import pytest
from pydicom import dcmread

from dicom_deid.header.keys import load_key
from tests.helpers import shared_dir
from tests.node.factory import write_study
from tests.node.peers import Node, Orthanc, storescu, wait_for
from tests.node.test_node_network import (
    FAST,
    _assert_no_phi,
    _kill_and_resume,
    _phi_values,
    _sop_uids,
)

pytestmark = [pytest.mark.network, pytest.mark.slow]

USER, PASSWORD = "deid", "orthanc-test-pw-5521"


@pytest.fixture(scope="module")
def web_archive(tmp_path_factory):
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc-web"), dicomweb=True,
                      users={USER: PASSWORD}).start()
    yield orthanc
    orthanc.stop()


@pytest.fixture()
def clean_web_archive(web_archive):
    web_archive.clear()
    return web_archive


def _web_destination(archive: Orthanc, password_file) -> list[dict]:
    return [{"name": "web", "type": "dicomweb", "url": archive.dicomweb_url,
             "auth": {"type": "basic", "username": USER, "password_file": str(password_file)},
             "timeout": 30}]


def _password(tmp_path, text: str = PASSWORD):
    path = tmp_path / "archive.password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_video_study_lands_in_orthanc_by_stow_rs(tmp_path, clean_web_archive):
    archive = clean_web_archive
    video = shared_dir() / "data" / "dicom" / "video"
    names = ("A_h264_high_es_720x576.dcm", "B_mpeg2_mpml_720x576.dcm")
    missing = [n for n in names if not (video / n).exists()]
    if missing:
        pytest.skip(f"shared DICOM videos absent from {video}: {', '.join(missing)}")
    files = [video / n for n in names]
    node = Node(tmp_path / "node", {
        **FAST, "destinations": _web_destination(archive, _password(tmp_path))}).start()
    try:
        storescu(files, node.port)
        key = load_key(node.state_dir / "site.key")
        expected = {key.uid(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID))
                    for f in files}
        wait_for(lambda: set(_sop_uids(archive)) >= expected, 90,
                 what="the de-identified videos in Orthanc")
        wait_for(lambda: node.states() == {"forwarded": len(files)}, 30, what="forwarded")
        tags = archive.all_tags()
        assert len(archive.instances()) == len(files)
        assert {t["SOPInstanceUID"] for t in tags} == expected
        assert all(t["StudyInstanceUID"].startswith("2.25.") for t in tags)
        sent = {str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                for f in files}
        stored = {archive.text(f"/instances/{i}/metadata/TransferSyntax")
                  for i in archive.instances()}
        assert stored == sent  # the files' bytes as written: no transcoding by STOW-RS
        phi = _phi_values(files)
        _assert_no_phi(json.dumps(tags), phi, "the archive")
        report = json.loads(node.cli("status", "--json").stdout)
        assert report["destinations"]["web"]["sent"] == len(files)
    finally:
        node.stop()
    assert f"web (STOW-RS {archive.dicomweb_url})" in node.log()
    _assert_no_phi(node.log() + node.audit(), phi, "the node's logs")
    assert PASSWORD not in node.log() + node.audit()


def test_wrong_password_is_retried_then_quarantined_and_nothing_is_lost(tmp_path,
                                                                        clean_web_archive):
    archive = clean_web_archive
    password = _password(tmp_path, "not-the-password-77")
    study = write_study(tmp_path / "study", 3)
    node = Node(tmp_path / "node", {
        **FAST, "destinations": _web_destination(archive, password),
        "forward": {"max_attempts": 3, "initial_delay": 0.2, "max_delay": 0.4}}).start()
    try:
        storescu(study.files, node.port)
        wait_for(lambda: node.journal("SELECT COUNT(*) FROM sends WHERE state = 'quarantined'"
                                      " AND attempts = 3")[0][0] == 3, 60,
                 what="the sends quarantined after 3 refused logins")
        reasons = {r[0] for r in node.journal("SELECT last_error FROM sends")}
        assert all("HTTP 401" in r and "gave up after 3 attempts" in r for r in reasons), reasons
        assert archive.instances() == []
        assert node.states() == {"done": 3}  # not forwarded
        outbox = [p for p in (node.state_dir / "outbox").rglob("*.dcm")]
        assert len(outbox) == 3  # the de-identified files wait in the outbox

        password.write_text(PASSWORD + "\n")  # read at each request: no restart
        retried = node.cli("retry", "--all")
        assert retried.returncode == 0 and "0 instances, 3 sends" in retried.stdout
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: set(_sop_uids(archive)) == {key.uid(s) for s in study.sop_uids}, 60,
                 what="delivery after the password was fixed")
        wait_for(lambda: node.states() == {"forwarded": 3}, 30, what="forwarded")
    finally:
        node.stop()
    logs = node.log() + node.audit()
    assert "not-the-password-77" not in logs and PASSWORD not in logs


def test_archive_down_then_up_is_delivered_once(tmp_path):
    archive = Orthanc(tmp_path / "orthanc", dicomweb=True, users={USER: PASSWORD})
    study = write_study(tmp_path / "study", 5)
    node = Node(tmp_path / "node", {
        **FAST, "destinations": _web_destination(archive, _password(tmp_path))}).start()
    try:
        storescu(study.files, node.port)
        wait_for(lambda: node.journal("SELECT COUNT(*) FROM sends WHERE attempts >= 2")[0][0]
                 == 5, 60, what="failed delivery attempts")
        report = json.loads(node.cli("status", "--json").stdout)
        assert report["destinations"]["web"]["pending"] == 5
        assert any("connection refused" in f["message"] for f in report["recent_failures"])
        archive.start()
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: set(_sop_uids(archive)) == {key.uid(s) for s in study.sop_uids}, 60,
                 what="delivery after the archive came up")
        wait_for(lambda: node.states() == {"forwarded": 5}, 20, what="forwarded")
        assert len(archive.instances()) == 5
    finally:
        node.stop()
        archive.stop()


def test_kill9_mid_study_then_restart_loses_nothing(tmp_path, clean_web_archive):
    archive = clean_web_archive
    study = write_study(tmp_path / "study", 40, size=64)
    node = Node(tmp_path / "node", {
        **FAST, "destinations": _web_destination(archive, _password(tmp_path))}).start()
    try:
        _kill_and_resume(node, study, archive)
    finally:
        node.stop()
