"""STOW-RS sender and the forwarder's policy with it, against a loopback HTTP archive.

The archive here is a small STOW-RS server in this file, not Orthanc: Orthanc 1.10's
DICOMweb plugin reports an instance its filter refused as stored, so it cannot answer a
partly failed request; this one answers as PS3.18 10.5.3 says (202 with a
FailedSOPSequence, in DICOM JSON or XML). tests/node/test_stowrs_orthanc.py delivers to a
real Orthanc.
"""

from __future__ import annotations

import base64
import io
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_deid.config import ConfigError, parse_config
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.forwarder import Forwarder
from dicom_deid.node.journal import DueSend, Journal, OutputRecord, ReceivedInstance
from dicom_deid.node.senders import make_sender
from dicom_deid.node.senders.cstore import CStoreSender
from dicom_deid.node.senders.stowrs import StowRsSender, parse_stow_response
from tests.node.factory import write_study
from tests.node.peers import make_certificates

ORTHANC_BODY = b"""{
 "00080005": {"Value": ["ISO_IR 100"], "vr": "CS"},
 "00081198": {"vr": "SQ"},
 "00081199": {"Value": [{"00081150": {"Value": ["1.2.840.10008.5.1.4.1.1.7"], "vr": "UI"},
                          "00081155": {"Value": ["2.25.1"], "vr": "UI"}}], "vr": "SQ"}}"""


def test_response_json_and_xml_give_stored_and_failed_instances():
    ok = parse_stow_response(ORTHANC_BODY, "application/dicom+json")
    assert ok is not None and ok.stored == {"2.25.1"} and ok.failed == {}
    xml = b"""<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel xml:space="preserve">
 <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence">
  <Item number="1">
   <DicomAttribute tag="00081155" vr="UI"><Value number="1">2.25.2</Value></DicomAttribute>
   <DicomAttribute tag="00081197" vr="US"><Value number="1">42752</Value></DicomAttribute>
  </Item>
 </DicomAttribute>
 <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
  <Item number="1">
   <DicomAttribute tag="00081155" vr="UI"><Value number="1">2.25.1</Value></DicomAttribute>
  </Item>
 </DicomAttribute>
</NativeDicomModel>"""
    both = parse_stow_response(xml, "application/dicom+xml")
    assert both is not None and both.stored == {"2.25.1"} and both.failed == {"2.25.2": 0xA700}
    assert parse_stow_response(b"", "application/dicom+json") is None
    assert parse_stow_response(b"<html>proxy error</html>", "text/html") is None


class _Archive(ThreadingHTTPServer):
    """A STOW-RS archive on loopback that refuses the SOP instances in `refuse`."""

    def __init__(self, password: str = "right", xml: bool = False, tls=None, bearer=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.scheme = "http"
        if tls is not None:  # https; a client certificate signed by tls.ca is required
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.socket = ctx.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.bearer = bearer
        self.password = password
        self.xml = xml
        self.refuse: set[str] = set()
        self.stored: list[str] = []
        self.requests = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}/dicom-web"


class _Handler(BaseHTTPRequestHandler):
    server: _Archive

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests += 1
        expected = "Basic " + base64.b64encode(f"deid:{self.server.password}".encode()).decode()
        if self.server.bearer is not None:
            expected = f"Bearer {self.server.bearer}"
        if self.headers.get("Authorization") != expected:
            self._answer(401, b"", "text/plain")
            return
        assert self.path == "/dicom-web/studies"
        ctype = self.headers["Content-Type"]
        assert ctype.startswith('multipart/related; type="application/dicom"')
        boundary = ctype.rsplit("boundary=", 1)[1].encode()
        stored, failed = [], []
        for part in body.split(b"--" + boundary)[1:-1]:
            head, _, data = part.partition(b"\r\n\r\n")
            assert b"Content-Type: application/dicom" in head
            uid = str(dcmread(io.BytesIO(data[:-2])).SOPInstanceUID)
            (failed if uid in self.server.refuse else stored).append(uid)
        self.server.stored += stored
        if self.server.xml:
            items = "".join(
                f'<Item number="1"><DicomAttribute tag="00081155" vr="UI"><Value number="1">'
                f'{u}</Value></DicomAttribute><DicomAttribute tag="00081197" vr="US">'
                f'<Value number="1">272</Value></DicomAttribute></Item>' for u in failed)
            refs = "".join(
                f'<Item number="1"><DicomAttribute tag="00081155" vr="UI"><Value number="1">'
                f'{u}</Value></DicomAttribute></Item>' for u in stored)
            answer = (f'<NativeDicomModel><DicomAttribute tag="00081198" vr="SQ">{items}'
                      f'</DicomAttribute><DicomAttribute tag="00081199" vr="SQ">{refs}'
                      f'</DicomAttribute></NativeDicomModel>').encode()
            self._answer(202 if failed else 200, answer, "application/dicom+xml")
            return
        seq = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [u]}}
                                                   for u in stored]},
               "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [u]},
                                                   "00081197": {"vr": "US", "Value": [0xC000]}}
                                                  for u in failed]}}
        self._answer(202 if failed else 200, json.dumps(seq).encode(), "application/dicom+json")

    def _answer(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _setup(tmp_path: Path, archive: _Archive, instances: int = 3, max_attempts: int = 3):
    """A journal with one processed study whose outputs are due to the archive."""
    state = tmp_path / "state"
    study = write_study(state / "outbox" / "study", instances)
    (tmp_path / "password").write_text("right\n")
    config = parse_config({
        "state_dir": str(state),
        "forward": {"max_attempts": max_attempts, "initial_delay": 0, "max_delay": 0},
        "destinations": [{"name": "web", "type": "dicomweb", "url": archive.url,
                          "auth": {"type": "basic", "username": "deid",
                                   "password_file": str(tmp_path / "password")}}]})
    journal = Journal(config.journal_path)
    ids = [journal.record_received(ReceivedInstance(
        study_uid="1.2.3", study_token="S-test", sop_instance_uid=f"1.2.3.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax="1.2.840.10008.1.2.1",
        modality="OT", study_description="", calling_aet="PACS", called_aet="DICOM-DEID",
        path=f"spool/{n}.dcm", size=1), now=1.0)[0] for n in range(instances)]
    [study_id] = journal.stable_studies(quiet_since=2.0)
    job = journal.start_job(study_id, [(i, {"destinations": ["web"]}) for i in ids], [])
    outputs = [OutputRecord(str(f.relative_to(state)), "1.2.840.10008.5.1.4.1.1.7",
                            "1.2.840.10008.1.2.1", ("web",)) for f in study.files]
    assert journal.finish_job(job, ids, [], outputs)
    forwarder = Forwarder(config, config.destinations[0], AuditLog(state / "audit.log"),
                          threading.Event())
    forwarder.journal = journal
    return config, journal, forwarder, study


def _sends(journal: Journal) -> list[tuple]:
    return journal.query("SELECT state, attempts, last_error FROM sends ORDER BY id")


@pytest.mark.parametrize("xml", [False, True], ids=["json", "xml"])
def test_partly_refused_request_is_retried_then_quarantined_per_instance(tmp_path, xml):
    archive = _Archive(xml=xml)
    try:
        config, journal, forwarder, study = _setup(tmp_path, archive)
        archive.refuse = {study.sop_uids[1]}
        assert isinstance(forwarder.sender, StowRsSender)
        for attempt in range(1, 4):
            assert forwarder.deliver_due() == (3 if attempt == 1 else 1)
            state, attempts, error = _sends(journal)[1]
            assert attempts == attempt and "archive refused it" in error
            assert ("FailureReason 0x0110" if xml else "FailureReason 0xC000") in error
        assert [s[0] for s in _sends(journal)] == ["sent", "quarantined", "sent"]
        assert "gave up after 3 attempts" in _sends(journal)[1][2]
        assert forwarder.deliver_due() == 0  # nothing due: quarantined waits for `retry`
        assert sorted(archive.stored) == sorted([study.sop_uids[0], study.sop_uids[2]])
        assert study.files[1].exists()  # the refused output stays in the outbox

        archive.refuse = set()
        assert journal.retry(None) == {"instances": 0, "sends": 1}
        assert forwarder.deliver_due() == 1
        assert [s[0] for s in _sends(journal)] == ["sent"] * 3
        assert journal.query("SELECT DISTINCT state FROM instances")[0][0] == "forwarded"
        assert sorted(archive.stored) == sorted(study.sop_uids)  # each once
        assert '"event": "quarantined"' in (config.state_dir / "audit.log").read_text()
    finally:
        archive.shutdown()


def test_wrong_password_is_retried_and_never_logged(tmp_path, caplog):
    archive = _Archive(password="the-real-one")
    try:
        config, journal, forwarder, study = _setup(tmp_path, archive, max_attempts=5)
        (tmp_path / "password").write_text("wrong-secret-123\n")
        caplog.set_level("DEBUG")
        forwarder.deliver_due()
        assert {s[:2] for s in _sends(journal)} == {("pending", 1)}
        assert "HTTP 401" in _sends(journal)[0][2] and "auth" in _sends(journal)[0][2]
        assert archive.stored == []
        # The password file is read at each request: fixing it needs no restart.
        (tmp_path / "password").write_text("the-real-one\n")
        assert forwarder.deliver_due() == 3
        assert [s[0] for s in _sends(journal)] == ["sent"] * 3
        logged = caplog.text + (config.state_dir / "audit.log").read_text() + json.dumps(
            [r[0] for r in journal.query("SELECT message FROM events")])
        assert "wrong-secret" not in logged and "the-real-one" not in logged
        assert "Basic " not in logged
    finally:
        archive.shutdown()


def test_archive_down_counts_attempts_and_keeps_the_files(tmp_path):
    archive = _Archive()
    archive.shutdown()
    archive.server_close()  # its port is closed now: connection refused
    config, journal, forwarder, study = _setup(tmp_path, archive, max_attempts=2)
    forwarder.deliver_due()
    assert {s[:2] for s in _sends(journal)} == {("pending", 1)}
    assert "connection refused" in _sends(journal)[0][2]
    forwarder.deliver_due()
    assert {s[:2] for s in _sends(journal)} == {("quarantined", 2)}
    assert all(f.exists() for f in study.files)


def test_sender_is_chosen_by_destination_type(tmp_path):
    config = parse_config({"destinations": [
        {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104},
        {"name": "web", "type": "dicomweb", "url": "https://archive.example.org/dicom-web/"}]})
    pacs, web = config.destinations
    assert isinstance(make_sender(config, pacs, threading.Event()), CStoreSender)
    assert isinstance(make_sender(config, web, threading.Event()), StowRsSender)
    assert (web.type, web.url, web.host, web.port) == (
        "dicomweb", "https://archive.example.org/dicom-web", "archive.example.org", 443)


def test_dicomweb_destination_problems_are_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"destinations": [
            {"name": "a", "type": "dicomweb", "url": "https://user:pw@host/dicom-web"},
            {"name": "b", "type": "dicomweb", "url": "ftp://host/x"},
            {"name": "b2", "type": "dicomweb", "url": "https://host/x", "ae_title": "X"},
            {"name": "c", "type": "dicomweb", "url": "http://h/x",
             "auth": {"type": "basic", "username": "u"}},
            {"name": "c2", "type": "dicomweb", "url": "http://h/x", "tls": {}},
            {"name": "d", "type": "dicomweb", "url": "http://h/x",
             "auth": {"type": "bearer", "token_file": str(tmp_path / "missing")}},
            {"name": "e", "type": "stow"},
            {"name": "f", "ae_title": "F", "host": "h", "port": 1, "url": "http://h"},
        ]})
    problems = "\n".join(err.value.problems)
    assert "destinations[0].url: must not hold credentials: use 'auth'" in problems
    assert "destinations[1].url: must be an http:// or https:// URL" in problems
    assert "destinations[2].ae_title: is for type: dicom destinations" in problems
    assert "destinations[3].auth.password_file: basic auth needs password_file" in problems
    assert "destinations[4].tls: needs an https:// url" in problems
    assert f"destinations[5].auth.token_file: file {tmp_path / 'missing'} does not exist" \
        in problems
    assert "destinations[6].type: must be 'dicom' or 'dicomweb', got 'stow'" in problems
    assert "destinations[7].url: is for type: dicomweb destinations" in problems
    assert "pw" not in problems.replace("password_file", "")


def _web_config(tmp_path: Path, archive: _Archive, **destination) -> tuple:
    state = tmp_path / "state"
    study = write_study(state / "outbox" / "study", 2)
    config = parse_config({"state_dir": str(state), "destinations": [
        {"name": "web", "type": "dicomweb", "url": archive.url, **destination}]})
    sends = [DueSend(i, i, str(f.relative_to(state)), "", "", 0, 1)
             for i, f in enumerate(study.files)]
    return config, sends


class _Outcomes:
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.failed: list[tuple[list[int], str]] = []

    def sent_(self, send) -> None:
        self.sent.append(send.send_id)

    def failed_(self, sends, error) -> None:
        self.failed.append(([s.send_id for s in sends], error))


def _deliver(config, sends) -> _Outcomes:
    outcomes = _Outcomes()
    recorder = type("Recorder", (), {"sent": lambda _, s: outcomes.sent_(s),
                                     "failed": lambda _, ss, e: outcomes.failed_(ss, e)})()
    sender = StowRsSender(config, config.destinations[0], threading.Event())
    try:
        sender.deliver(sends, recorder)
    finally:
        sender.close()
    return outcomes


def test_https_with_the_archive_ca_and_a_client_certificate(tmp_path):
    """Orthanc 1.10's HTTPS server exits at the first TLS connection on this Debian (seen
    with SslEnabled, with and without SslVerifyPeers), so TLS is checked against this
    archive: a real TLS handshake on loopback, client certificate required."""
    certs = make_certificates(tmp_path / "certs")
    stranger = make_certificates(tmp_path / "stranger")
    archive = _Archive(tls=certs)
    token = tmp_path / "token"
    token.write_text("bearer-token-0123456789\n")
    archive.bearer = "bearer-token-0123456789"
    try:
        client = {"ca": str(certs.ca), "cert": str(certs.cert), "key": str(certs.key)}
        auth = {"type": "bearer", "token_file": str(token)}
        config, sends = _web_config(tmp_path / "ok", archive, tls=client, auth=auth)
        ok = _deliver(config, sends)
        assert ok.sent == [0, 1] and ok.failed == []
        assert len(archive.stored) == 2

        config, sends = _web_config(tmp_path / "ca", archive, auth=auth,
                                    tls={**client, "ca": str(stranger.ca)})
        unknown_ca = _deliver(config, sends)
        assert unknown_ca.sent == [] and unknown_ca.failed[0][0] == [0, 1]
        assert "TLS failed" in unknown_ca.failed[0][1]
        assert "CERTIFICATE_VERIFY_FAILED" in unknown_ca.failed[0][1]

        config, sends = _web_config(tmp_path / "nocert", archive, auth=auth,
                                    tls={"ca": str(certs.ca)})
        no_client_cert = _deliver(config, sends)
        assert no_client_cert.sent == [] and no_client_cert.failed[0][0] == [0, 1]
        assert len(archive.stored) == 2

        token.write_text("another-token-0123456789\n")
        config, sends = _web_config(tmp_path / "rotated", archive, tls=client, auth=auth)
        refused = _deliver(config, sends)
        assert refused.sent == [] and "HTTP 401" in refused.failed[0][1]
        assert "another-token" not in refused.failed[0][1]
    finally:
        archive.shutdown()
