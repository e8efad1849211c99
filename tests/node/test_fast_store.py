"""The lean C-STORE path (dicom_deid/node/fast_store.py) against pynetdicom's own.

A receiver runs in this process twice over, lean path on and off, and gets the same input:
files, journal rows, audit lines and statuses must be the same; everything unusual must be
left to pynetdicom (Receiver.served says which path answered).
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicom_deid.config import parse_config
from dicom_deid.header.keys import load_key
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.fast_store import (
    file_preamble,
    parse_command,
    plain_uid,
    store_response,
)
from dicom_deid.node.receiver import Receiver
from dicom_deid.node.service import ensure_node_key
from tests.node.factory import make_instance, write_study
from tests.node.peers import free_port, storescu, wait_for

pytestmark = [pytest.mark.network]

UIDS = ["1.2.3", "1.2.34", "1.2.840.10008.5.1.4.1.1.7", "2.25." + "1" * 59]


# ---------------------------------------------------------------------- encoders


@pytest.mark.parametrize("instance", UIDS)
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                    "1.2.840.10008.1.2.4.50"])
def test_file_meta_is_byte_for_byte_pynetdicoms(instance, syntax):
    from pynetdicom.dsutils import create_file_meta

    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, create_file_meta(sop_class_uid=SecondaryCaptureImageStorage,
                                              sop_instance_uid=instance,
                                              transfer_syntax=syntax))
    assert file_preamble(SecondaryCaptureImageStorage, instance, syntax) == fp.getvalue()


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC000])
@pytest.mark.parametrize("instance", UIDS)
def test_response_is_byte_for_byte_pynetdicoms(status, instance):
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 513
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    expected = encode(message.command_set, True, True)
    assert store_response(CTImageStorage, 513, status, instance) == expected


def test_command_decoder_takes_only_plain_uids_and_whole_group_0000():
    assert plain_uid(b"1.2.840.10008.5.1.4.1.1.7\0") == "1.2.840.10008.5.1.4.1.1.7"
    for odd in (b"1.02.3", b"1.2.3.", b" 1.2.3", b"1.2\\3.4", b"", b"1.2.\xff", b"9" * 65):
        assert plain_uid(odd) is None, odd
    command = store_command(CTImageStorage, "1.2.3.4")
    fields = parse_command(command)
    assert fields is not None and fields[0x0002] == CTImageStorage.encode() + b"\0"
    assert parse_command(command[:-1]) is None  # a length past the end
    assert parse_command(command + struct.pack("<HHL", 8, 0x18, 0)) is None  # not group 0000
    assert parse_command(command + struct.pack("<HHL", 0, 0x110, 2) + b"\1\0") is None  # twice


# ---------------------------------------------------------------------- a receiver here


class Here:
    """A Receiver in this process (lean path on or off)."""

    def __init__(self, root: Path, lean: bool, key: Path | None = None, **listen):
        self.config = parse_config({"state_dir": str(root), "listen": {
            "port": free_port(), "min_free_disk": "16M", "fast_store": lean, **listen}})
        if key is not None:  # the same site key: the same study tokens in both
            self.config.key_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(key, self.config.key_file)
        ensure_node_key(self.config.key_file)
        self.audit = AuditLog(self.config.audit_log)
        self.receiver = Receiver(self.config, load_key(self.config.key_file), self.audit)
        self.receiver.start()
        self.port = self.config.listen.port

    def stop(self) -> None:
        self.receiver.stop()
        self.audit.close()

    def rows(self) -> list[tuple]:
        from dicom_deid.node.journal import Journal

        journal = Journal(self.config.journal_path)
        try:
            return journal.query(
                "SELECT sop_instance_uid, sop_class_uid, s.study_uid, s.token, transfer_syntax,"
                " modality, study_description, calling_aet, called_aet, size, state, reason"
                " FROM instances LEFT JOIN studies s ON s.id = study_id"
                " ORDER BY sop_instance_uid")
        finally:
            journal.close()

    def spooled(self) -> dict[str, bytes]:
        """Spool files by SOP Instance UID."""
        out = {}
        for path in (self.config.state_dir / "spool").rglob("*.dcm"):
            if "incoming" not in path.parts:
                out[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path.read_bytes()
        return out

    def incoming(self) -> list[Path]:
        return list(self.receiver.spool.incoming.iterdir())


@pytest.fixture
def pair(tmp_path):
    lean = Here(tmp_path / "lean", True)
    plain = Here(tmp_path / "plain", False, key=lean.config.key_file)
    yield lean, plain
    lean.stop()
    plain.stop()


def audit_lines(here: Here) -> list[str]:
    import json

    lines = []
    for line in here.config.audit_log.read_text().splitlines():
        record = json.loads(line)
        lines.append(" ".join(f"{k}={v}" for k, v in sorted(record.items())
                              if k not in ("time", "ts", "at", "instance")))
    return sorted(lines)


def test_storescu_instances_take_the_lean_path_and_match_pynetdicoms(pair, tmp_path):
    lean, plain = pair
    study = write_study(tmp_path / "study", 3)
    big = make_instance(study.study_uid, generate_uid(), generate_uid(), 9, rows=1024,
                        columns=1536)  # 1.5 MiB: past the inline limit, many PDUs
    big_path = tmp_path / "study" / "big.dcm"
    big.save_as(big_path, enforce_file_format=True)
    files = [*study.files, big_path]
    for here in pair:
        storescu(files, here.port)
    assert lean.receiver.served == {"lean": 4, "pynetdicom": 0}
    assert plain.receiver.served == {"lean": 0, "pynetdicom": 4}
    assert lean.rows() == plain.rows() and len(lean.rows()) == 4
    assert lean.spooled() == plain.spooled()
    assert audit_lines(lean) == audit_lines(plain)
    assert not lean.incoming()
    for sop, data in lean.spooled().items():
        ds = dcmread(BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == sop == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
        from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
        assert ds.file_meta.ImplementationClassUID == PYNETDICOM_IMPLEMENTATION_UID
    if shutil.which("dciodvfy"):
        one = tmp_path / "one.dcm"
        one.write_bytes(next(iter(lean.spooled().values())))
        out = subprocess.run(["dciodvfy", "-filename", str(one)], capture_output=True,
                             text=True, timeout=60)
        assert "Error - File meta information" not in out.stderr + out.stdout


def test_a_resent_instance_and_a_reused_sop_uid_are_handled_as_pynetdicoms_path_does(
        pair, tmp_path):
    """A PACS that resends the same instance, then sends other content under the same SOP
    Instance UID: each path answers, journals, spools and audits it the same way."""
    study = write_study(tmp_path / "study", 2)
    first = study.files[0]
    reused = make_instance(study.study_uid, generate_uid(), str(dcmread(first).SOPInstanceUID),
                           5, rows=32, columns=32)
    reused_path = tmp_path / "reused.dcm"
    reused.save_as(reused_path, enforce_file_format=True)
    outputs = []
    for here in pair:
        sent = [storescu(files, here.port, check=False)
                for files in (study.files, [first], [reused_path])]
        outputs.append([(r.returncode, "Success" in r.stdout + r.stderr) for r in sent])
    lean, plain = pair
    assert outputs[0] == outputs[1]
    assert lean.receiver.served["lean"] == 4 and lean.receiver.served["pynetdicom"] == 0
    assert lean.rows() == plain.rows()
    assert lean.spooled() == plain.spooled()
    assert audit_lines(lean) == audit_lines(plain)
    assert not lean.incoming()


# ---------------------------------------------------------------------- raw messages


def store_command(sop_class: str, sop_instance: str, message_id: int = 7,
                  data_set: bool = True, extra: bytes = b"") -> bytes:
    def ui(v: str) -> bytes:
        b = v.encode()
        return b + b"\0" if len(b) % 2 else b

    elements = [(0x0002, ui(sop_class)), (0x0100, struct.pack("<H", 1)),
                (0x0110, struct.pack("<H", message_id)), (0x0700, struct.pack("<H", 2)),
                (0x0800, struct.pack("<H", 0x0000 if data_set else 0x0101)),
                (0x1000, ui(sop_instance))]
    body = b"".join(struct.pack("<HHL", 0, t, len(v)) + v for t, v in elements) + extra
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def pdu(*items: bytes) -> bytes:
    payload = b"".join(items)
    return struct.pack(">BBL", 0x04, 0, len(payload)) + payload


class Client:
    """A pynetdicom requestor that sends hand-made P-DATA-TF PDUs and reads the answer."""

    def __init__(self, port: int, contexts=((SecondaryCaptureImageStorage,
                                             ImplicitVRLittleEndian),)):
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title="PACS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(Verification)
        for abstract, syntax in contexts:
            ae.add_requested_context(abstract, syntax)
        self.assoc = ae.associate("127.0.0.1", port, ae_title="DICOM-DEID")
        assert self.assoc.is_established
        self.cx = {str(c.abstract_syntax): c.context_id for c in self.assoc.accepted_contexts}

    def send(self, *pdus: bytes) -> None:
        sock: socket.socket = self.assoc.dul.socket.socket  # type: ignore[union-attr]
        for data in pdus:
            try:
                sock.sendall(data)
            except OSError:  # aborted by the node meanwhile
                return

    def status(self, *pdus: bytes) -> int | None:
        """Send, then the Status of the response; None if the association ended instead."""
        self.assoc._reactor_checkpoint.clear()
        try:
            self.send(*pdus)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                _, rsp = self.assoc.dimse.get_msg(block=False)
                if rsp is not None:
                    return int(rsp.Status)
                # The A-ABORT reaches the DUL (the association's own reactor is paused).
                if self.assoc.dul.state_machine.current_state in ("Sta1", "Sta13"):
                    return None
                time.sleep(0.01)
            raise AssertionError("no response")
        finally:
            self.assoc._reactor_checkpoint.set()

    def echo(self) -> int:
        return int(self.assoc.send_c_echo().Status)

    def close(self) -> None:
        wait_for(lambda: not self.assoc.is_established
                 or self.assoc.dul.state_machine.current_state == "Sta6", 10,
                 what="the association settled")
        if self.assoc.is_established:
            self.assoc.release()


def encoded(ds) -> bytes:
    from pynetdicom.dsutils import encode

    return encode(ds, True, True)  # implicit VR little endian


def instance(sop_class: str = SecondaryCaptureImageStorage):
    ds = make_instance(generate_uid(), generate_uid(), generate_uid(), 1)
    ds.SOPClassUID = sop_class
    return ds


def both(pair, send) -> tuple:
    """Run `send(client, here)` against the lean and the plain receiver."""
    results = []
    for here in pair:
        client = Client(here.port, ((SecondaryCaptureImageStorage, ImplicitVRLittleEndian),
                                    (CTImageStorage, ImplicitVRLittleEndian)))
        try:
            results.append(send(client, here))
        finally:
            client.close()
    return tuple(results)


def test_fragments_split_across_pdus_are_assembled(pair):
    ds = instance()  # the same instance to both
    command, data = store_command(SecondaryCaptureImageStorage, ds.SOPInstanceUID), encoded(ds)

    def send(client, here):
        cx = client.cx[SecondaryCaptureImageStorage]
        # The command in two PDUs, its last part in one PDU with the data set's first part,
        # the rest of the data set in fragments over three more PDUs.
        return client.status(pdu(pdv(cx, 0x01, command[:20])),
                             pdu(pdv(cx, 0x03, command[20:]), pdv(cx, 0x00, data[:100])),
                             pdu(pdv(cx, 0x00, data[100:300]), pdv(cx, 0x00, data[300:301])),
                             pdu(pdv(cx, 0x02, data[301:])))
    assert both(pair, send) == (0x0000, 0x0000)
    lean, plain = pair
    assert lean.receiver.served == {"lean": 1, "pynetdicom": 0}
    assert lean.rows() == plain.rows() and len(lean.rows()) == 1
    assert lean.spooled() == plain.spooled()


def test_two_messages_in_one_pdu_and_an_echo_after_them_fall_back_in_order(pair):
    def send(client, here):
        a, b = instance(), instance()
        cx = client.cx[SecondaryCaptureImageStorage]
        first = client.status(pdu(pdv(cx, 0x03, store_command(SecondaryCaptureImageStorage,
                                                              a.SOPInstanceUID)),
                                  pdv(cx, 0x02, encoded(a))))
        echo = client.echo()  # pynetdicom from here on: the association does not come back
        second = client.status(pdu(pdv(cx, 0x03, store_command(SecondaryCaptureImageStorage,
                                                               b.SOPInstanceUID, 8)),
                                   pdv(cx, 0x02, encoded(b))))
        return first, echo, second
    assert both(pair, send) == ((0, 0, 0), (0, 0, 0))
    lean, plain = pair
    assert lean.receiver.served == {"lean": 1, "pynetdicom": 1}
    assert len(lean.rows()) == len(plain.rows()) == 2


def test_mismatched_sop_class_and_no_data_set_get_pynetdicoms_statuses(pair):
    def send(client, here):
        cx = client.cx[SecondaryCaptureImageStorage]
        out = []
        # The data set says CT, the command and context say SC: the lean path's own check.
        ds = instance(CTImageStorage)
        out.append(client.status(pdu(pdv(cx, 0x03, store_command(
            SecondaryCaptureImageStorage, ds.SOPInstanceUID)), pdv(cx, 0x02, encoded(ds)))))
        # The command says CT on the SC context: left to pynetdicom (0xA900 from the handler).
        ds = instance(CTImageStorage)
        out.append(client.status(pdu(pdv(cx, 0x03, store_command(
            CTImageStorage, ds.SOPInstanceUID)), pdv(cx, 0x02, encoded(ds)))))
        # No data set at all.
        out.append(client.status(pdu(pdv(cx, 0x03, store_command(
            SecondaryCaptureImageStorage, generate_uid(), data_set=False)))))
        return out
    assert both(pair, send) == ([0xA900, 0xA900, 0xC000], [0xA900, 0xA900, 0xC000])
    lean, plain = pair
    assert lean.receiver.served == {"lean": 1, "pynetdicom": 2}
    assert lean.rows() == plain.rows() == []
    assert not lean.incoming()


@pytest.mark.parametrize("case", ["unknown element", "cut short", "odd uid"])
def test_a_command_set_the_lean_decoder_does_not_take_is_left_to_pynetdicom(pair, case):
    def send(client, here):
        cx = client.cx[SecondaryCaptureImageStorage]
        ds = instance()
        if case == "unknown element":  # Move Originator Message ID: not taken here
            command = store_command(SecondaryCaptureImageStorage, ds.SOPInstanceUID,
                                    extra=struct.pack("<HHLH", 0, 0x1031, 2, 5))
        elif case == "cut short":
            command = store_command(SecondaryCaptureImageStorage, ds.SOPInstanceUID)[:-5]
        else:
            command = store_command(SecondaryCaptureImageStorage, "1.2.03.4")
        status = client.status(pdu(pdv(cx, 0x03, command), pdv(cx, 0x02, encoded(ds))))
        return status, len(here.rows())
    lean_result, plain_result = both(pair, send)
    assert lean_result == plain_result
    lean, _ = pair
    assert lean.receiver.served["lean"] == 0
    assert not lean.incoming()


def test_interleaved_or_malformed_pdvs_inside_a_data_set_abort_and_leave_nothing(pair):
    lean, _ = pair
    for bad in ("command inside", "other context", "bad length"):
        client = Client(lean.port, ((SecondaryCaptureImageStorage, ImplicitVRLittleEndian),
                                    (CTImageStorage, ImplicitVRLittleEndian)))
        cx, other = client.cx[SecondaryCaptureImageStorage], client.cx[CTImageStorage]
        ds = instance()
        data = encoded(ds)
        start = pdu(pdv(cx, 0x03, store_command(SecondaryCaptureImageStorage, ds.SOPInstanceUID)),
                    pdv(cx, 0x00, data[:50]))
        if bad == "command inside":
            rest = pdu(pdv(cx, 0x01, b"\0" * 8))
        elif bad == "other context":
            rest = pdu(pdv(other, 0x02, data[50:]))
        else:
            rest = pdu(struct.pack(">LBB", 999, cx, 0x02) + data[50:60])
        try:
            assert client.status(start, rest) is None, bad
        finally:
            client.close()
    assert lean.rows() == []
    wait_for(lambda: not lean.incoming(), 5, what="partial receptions removed")


def test_an_instance_past_max_instance_size_is_cut_off_while_arriving(tmp_path):
    here = Here(tmp_path / "cut", True, max_instance_size=4096)
    try:
        client = Client(here.port)
        cx = client.cx[SecondaryCaptureImageStorage]
        ds = make_instance(generate_uid(), generate_uid(), generate_uid(), 1, rows=512,
                           columns=512)
        data = encoded(ds)
        command = store_command(SecondaryCaptureImageStorage, ds.SOPInstanceUID)
        pdus = [pdu(pdv(cx, 0x03, command))]
        pdus += [pdu(pdv(cx, 0x00, data[i:i + 16000])) for i in range(0, len(data) - 16000, 16000)]
        try:
            assert client.status(*pdus) is None
        finally:
            client.close()
        assert here.rows() == []
        wait_for(lambda: not here.incoming(), 5, what="the partial reception removed")
    finally:
        here.stop()


def test_a_peer_gone_in_the_middle_of_a_data_set_leaves_no_partial_file(tmp_path):
    here = Here(tmp_path / "gone", True)
    try:
        client = Client(here.port)
        cx = client.cx[SecondaryCaptureImageStorage]
        ds = instance()
        client.send(pdu(pdv(cx, 0x03, store_command(SecondaryCaptureImageStorage,
                                                    ds.SOPInstanceUID)),
                        pdv(cx, 0x00, encoded(ds)[:64])))
        wait_for(lambda: here.incoming(), 5, what="the reception opened")
        client.assoc.dul.socket.socket.close()  # type: ignore[union-attr]
        wait_for(lambda: not here.incoming(), 10, what="the partial reception removed")
        assert here.rows() == []
        client.assoc.abort()
    finally:
        here.stop()


def test_large_receptions_are_handed_to_writeback_as_they_arrive(tmp_path, monkeypatch):
    """Every WRITEBACK_EVERY bytes either the flush behind the writer is started or, while
    one still runs, the range is handed to the kernel's write-back; together they cover
    the file in order (tests/node/test_flush_behind.py tests the flusher itself)."""
    from dicom_deid.node import receiver as receiver_module
    from dicom_deid.node.receiver import WRITEBACK_EVERY, Reception

    hinted: list[tuple[int, int]] = []
    real = receiver_module.start_writeback

    def spy(fd: int, offset: int, length: int) -> None:
        hinted.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(receiver_module, "start_writeback", spy)
    reception = Reception(tmp_path, 0)
    chunk = bytes(range(256)) * 1024  # 256 KiB, a PDU's worth
    for _ in range(40):  # 10 MiB
        reception.write(chunk)
    flusher = reception._flusher
    assert flusher is not None
    reception.close()
    assert Path(reception.name).read_bytes() == chunk * 40
    steps = 10 * 2**20 // WRITEBACK_EVERY
    assert all(offset % WRITEBACK_EVERY == 0 and length == WRITEBACK_EVERY
               for offset, length in hinted)
    assert flusher.flushes + len(hinted) <= steps and len(hinted) < steps


def test_a_first_store_before_pynetdicom_marks_the_association_established_is_taken(
        tmp_path, monkeypatch):
    # pynetdicom sets is_established only after the A-ASSOCIATE-AC is sent and the
    # EVT_ACCEPTED handlers ran: a slow handler lets the first P-DATA arrive before it.
    original = Receiver._on_accepted

    def slow(self, event):
        time.sleep(0.3)
        original(self, event)

    monkeypatch.setattr(Receiver, "_on_accepted", slow)
    here = Here(tmp_path / "early", True)
    try:
        client = Client(here.port)
        cx = client.cx[SecondaryCaptureImageStorage]
        ds = instance()
        try:
            assert client.status(pdu(pdv(cx, 0x03, store_command(
                SecondaryCaptureImageStorage, ds.SOPInstanceUID)),
                pdv(cx, 0x02, encoded(ds)))) == 0x0000
        finally:
            client.close()
        assert here.receiver.served == {"lean": 1, "pynetdicom": 0}
        assert len(here.rows()) == 1
    finally:
        here.stop()
