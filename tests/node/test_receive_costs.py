"""The receive path's cheaper pieces keep what they replace: Reception files as mkstemp made
them, study tokens as study_token computes them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dicom_deid.header.keys import SiteKey
from dicom_deid.node import receiver as receiver_module
from dicom_deid.node.audit import study_token
from dicom_deid.node.receiver import Receiver, Reception


def test_a_reception_is_a_fresh_private_file_in_its_folder(tmp_path: Path):
    first, second = Reception(tmp_path, 0), Reception(tmp_path, 0)
    try:
        assert first.name != second.name
        for r in (first, second):
            path = Path(r.name)
            assert path.parent == tmp_path and path.suffix == ".dcm"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        first.write(b"abc")
        first.write(memoryview(b"def"))
        assert Path(first.name).read_bytes() == b"abcdef"
    finally:
        first.close()
        second.close()


def test_a_reception_refuses_past_the_watermark(tmp_path: Path):
    reception = Reception(tmp_path, 2**62)  # more free disk than any host has
    try:
        reception.write(b"x" * 10)
        assert reception.failed and Path(reception.name).stat().st_size == 0
    finally:
        reception.close()


def test_study_tokens_are_remembered_bounded_and_the_same(monkeypatch):
    key = SiteKey(os.urandom(32))
    fake = Receiver.__new__(Receiver)  # only what _token uses
    fake.key, fake._tokens = key, {}
    import threading

    fake._lock = threading.Lock()
    monkeypatch.setattr(receiver_module, "_TOKENS_KEPT", 8)
    for n in range(30):
        uid = f"1.2.3.{n % 12}"
        assert fake._token(uid) == study_token(key, uid)
        assert len(fake._tokens) <= 8


def test_both_receiving_paths_read_small_headers_without_pydicom(tmp_path, monkeypatch):
    """pynetdicom's path reads a small file once and gives its bytes to quick_header too;
    what both paths record is unchanged (test_fast_store compares them in full)."""
    from tests.node.factory import write_study
    from tests.node.peers import storescu
    from tests.node.test_fast_store import Here

    answered: list[bool] = []
    real = receiver_module.quick_header

    def spy(data: bytes):
        result = real(data)
        answered.append(result is not None)
        return result

    monkeypatch.setattr(receiver_module, "quick_header", spy)
    study = write_study(tmp_path / "study", 2)
    lean = Here(tmp_path / "lean", True)
    plain = Here(tmp_path / "plain", False, key=lean.config.key_file)
    try:
        for here in (lean, plain):
            storescu(study.files, here.port)
        assert lean.receiver.served == {"lean": 2, "pynetdicom": 0}
        assert plain.receiver.served == {"lean": 0, "pynetdicom": 2}
        assert answered == [True] * 4
        assert lean.rows() == plain.rows() and len(lean.rows()) == 2
    finally:
        lean.stop()
        plain.stop()


def test_pynetdicom_standard_log_handlers_are_not_run_by_the_receiver(tmp_path):
    """Their output is always dropped (pynetdicom is held at WARNING), so the receiver
    unbinds them from its server and from each association it accepts."""
    from pynetdicom import AE, _handlers, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from tests.node.test_fast_store import Here

    here = Here(tmp_path / "node", lean=True)
    standard = {_handlers.standard_pdu_recv_handler, _handlers.standard_pdu_sent_handler,
                _handlers.standard_dimse_recv_handler, _handlers.standard_dimse_sent_handler}
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    try:
        server = here.receiver._server
        assoc = ae.associate("127.0.0.1", here.port, ae_title="DICOM-DEID")
        assert assoc.is_established
        accepted = [a for a in server.active_associations if a.is_established]
        assert accepted
        for event in (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV,
                      evt.EVT_DIMSE_SENT):
            bound = {h[0] for h in server.get_handlers(event)}
            bound |= {h[0] for a in accepted for h in a.get_handlers(event)}
            assert not bound & standard, event
        # What the receiver binds itself is still there.
        assert any(h[0] == here.receiver._on_message
                   for h in accepted[0].get_handlers(evt.EVT_DIMSE_RECV))
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        here.stop()
