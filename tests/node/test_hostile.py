"""The listener against hostile clients (issue 17), on loopback, with the node as a subprocess.

Each attack is bounded in count (at most 50 sockets) and time; where a real client fits,
the legitimate sender is DCMTK's storescu. Times are asserted only as liveness bounds
(a sender gets through, the node exits); speeds are in benchmarks/node_attacks.py.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import (
    CTImageStorage,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from tests.node import hostile
from tests.node.factory import make_instance, write_study
from tests.node.peers import Node, echoscu, make_certificates, storescu, wait_for

pytestmark = [pytest.mark.network, pytest.mark.slow]

KEEP = {"default_rule": {"profile": "basic", "faces": "none"},
        "processing": {"stable_seconds": 600, "workers": 1}}
LIMITS = {"accept_timeout": 2, "pdu_timeout": 2, "network_timeout": 3}


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "2-receive-workers"])
def workers(request):
    """listen.workers: every attack is tried on the single-process receiver and on receive
    worker processes (node/recv_pool.py), where the caps are counted across processes."""
    return request.param


@pytest.fixture(scope="module")
def node(tmp_path_factory, workers):
    root = tmp_path_factory.mktemp("hostile")
    node = Node(root, {**KEEP, "listen": {**LIMITS, "workers": workers},
                       "log": {"level": "DEBUG",
                                                         "file": str(root / "node.log")}})
    # Left by a kill while a job wrote its output: swept at start.
    leftover = node.state_dir / "outbox" / "S-1" / ".tmp-half.dcm"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    node.start()
    # A worker starting (heavy imports) can stall a 2-core host past the 2 s accept_timeout.
    wait_for(lambda: "worker processes ready" in node.log(), 120, what="the node's worker")
    node.leftover = leftover
    yield node
    node.stop()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("study"), 3)


def test_squatters_are_dropped_and_a_sender_gets_through(node, study):
    kinds = {"idle": 15, "partial": 15, "slowloris": 10, "random": 10}
    crowds = [hostile.Squatters(node.port, kind, n, interval=0.5) for kind, n in kinds.items()]
    try:
        for crowd in crowds:
            crowd.open()
        storescu(study.files, node.port, timeout=30)
        # None of them reaches A-ASSOCIATE-AC: listen.accept_timeout (2 s) drops them all.
        wait_for(lambda: all(not c.socks for c in crowds), 15, interval=0.5,
                 what="the node to drop every squatter")
        assert sum(c.dropped for c in crowds) == sum(kinds.values())
    finally:
        for crowd in crowds:
            crowd.close()
    assert node.proc is not None and node.proc.poll() is None


def test_connections_dropped_before_association_leave_no_thread_behind(node):
    """A connection dropped before its A-ASSOCIATE-RQ (an unknown PDU type here) left
    pynetdicom's association thread waiting listen.acse_timeout (10 s) for it. Those threads
    count against pynetdicom's association limit, so 50 random-byte sockets followed by an
    unknown-PDU flood locked the allowlisted sender out ("Local Limit Exceeded")."""
    assert node.proc is not None
    before = hostile.threads(node.proc.pid)
    for _ in range(30):
        hostile.unknown_pdu_flood(node.port, 60)
    wait_for(lambda: hostile.threads(node.proc.pid) <= before + 2, 4, interval=0.2,
             what="the dropped connections' threads to end (well before acse_timeout, 10 s)")


def test_accepted_association_stalled_mid_pdu_or_idle_is_dropped(node):
    stalled = hostile.connect(node.port)
    idle = hostile.connect(node.port)
    with stalled, idle:
        for sock in (stalled, idle):
            sock.sendall(hostile.associate_rq(calling="PACS"))
            assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC
        stalled.sendall(b"\x04\x00\x00")  # 3 bytes of a P-DATA header, then nothing
        assert hostile.closed_by_peer(stalled, 15)  # listen.pdu_timeout: 2 s
        assert hostile.closed_by_peer(idle, 15)  # listen.network_timeout: 3 s


def test_pdu_longer_than_allowed_is_refused_before_it_is_buffered(node):
    before = hostile.rss(node.proc.pid)
    # Before any association: an A-ASSOCIATE-RQ claiming 4 GiB.
    taken, closed = hostile.oversized_pdu(node.port, pdu_type=0x01, stream=64 * 2**20)
    assert closed and taken < 16 * 2**20, taken
    # An allowlisted sender's P-DATA ignoring the negotiated maximum (listen.max_pdu).
    taken, closed = hostile.oversized_pdu(node.port, established_as="PACS",
                                          stream=64 * 2**20)
    assert closed and taken < 16 * 2**20, taken
    assert hostile.rss(node.proc.pid) - before < 32 * 2**20


def test_log_is_private_phi_free_escaped_and_rate_limited(node, tmp_path):
    log_file = Path(node.config["log"]["file"])
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600

    # A data set value pydicom complains about, quoted in its warning.
    ds = make_instance(generate_uid(), generate_uid(), generate_uid(), 1)
    ds.SeriesInstanceUID = "LEAKME^Patient"
    ds.ReferringPhysicianName = "LEAKME^Doctor"
    path = tmp_path / "leak.dcm"
    ds.save_as(path, enforce_file_format=True)
    storescu([path], node.port, timeout=30)

    assert hostile.forged_calling_ae(node.port, b"EVIL\nFAKE ERROR") != b"\x02"
    size = log_file.stat().st_size
    hostile.unknown_pdu_flood(node.port, total=60_000)
    for _ in range(20):
        hostile.unknown_pdu_flood(node.port, total=600)
    time.sleep(1)
    grown = log_file.stat().st_size - size
    assert grown < 8 * 1024, f"60 KB of junk made {grown} bytes of log"

    text = log_file.read_text(errors="replace")
    assert "LEAKME" not in text and "Patient" not in text
    assert not re.search(r"^FAKE", text, re.MULTILINE), "a peer forged a log line"
    assert "EVIL\\x0aFAKE" in text or "EVIL" not in text
    assert not node.leftover.exists(), ".tmp-* output left by a kill was not swept"


def test_called_ae_title_and_c_store_statuses(node, tmp_path):
    from pynetdicom import AE
    from pynetdicom.dimse_primitives import C_STORE

    assert echoscu(node.port, called="SOMEONE-ELSE").returncode != 0
    assert echoscu(node.port).returncode == 0

    ae = AE(ae_title="PACS")
    ae.add_requested_context(SecondaryCaptureImageStorage, ImplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOM-DEID")
    assert assoc.is_established
    cx = assoc.accepted_contexts[0].context_id

    def store(dataset: bytes | None) -> int:
        req = C_STORE()
        req.MessageID = 7
        req.AffectedSOPClassUID = SecondaryCaptureImageStorage
        req.AffectedSOPInstanceUID = generate_uid()
        req.Priority = 2
        if dataset is not None:
            req.DataSet = BytesIO(dataset)
        assoc._reactor_checkpoint.clear()  # as send_c_store does: we take the response
        try:
            assoc.dimse.send_msg(req, cx)
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        return rsp.Status

    try:
        # The command says Secondary Capture; the data set says CT.
        ds = make_instance(generate_uid(), generate_uid(), generate_uid(), 1)
        ds.SOPClassUID = CTImageStorage
        assert store(encode(ds)) == 0xA900
        assert store(None) == 0xC000  # a C-STORE with no data set at all
        ds.SOPClassUID = SecondaryCaptureImageStorage
        assert store(encode(ds)) == 0x0000
    finally:
        assoc.release()


def encode(ds) -> bytes:
    from pynetdicom.dsutils import encode as encode_dataset

    return encode_dataset(ds, True, True)  # implicit VR little endian, the context's syntax


def test_associations_per_address_are_capped_and_squatters_do_not_count(tmp_path, workers):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    node = Node(tmp_path / "cap", {**KEEP, "listen": {
        "max_associations": 2, "max_associations_per_address": 1,
        "workers": workers}}).start()
    wait_for(lambda: "worker processes ready" in node.log(), 120, what="the node's worker")
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    try:
        # Pending (unaccepted) connections have their own pool: 20 of them take no slot.
        with hostile.Squatters(node.port, "idle", 20):
            first = ae.associate("127.0.0.1", node.port, ae_title="DICOM-DEID")
            assert first.is_established
            second = ae.associate("127.0.0.1", node.port, ae_title="DICOM-DEID")
            assert second.is_rejected  # one accepted association per address
            first.release()
        assert "max_associations_per_address" in node.log()
    finally:
        node.stop()


def test_quarantine_list_show_discard(node, tmp_path):
    ds = make_instance(generate_uid(), generate_uid(), generate_uid(), 1)
    del ds.StudyInstanceUID  # quarantined on arrival: no study to file it under
    path = tmp_path / "nostudy.dcm"
    ds.save_as(path, enforce_file_format=True)
    storescu([path], node.port, timeout=30)
    listed = node.cli("quarantine", "list")
    assert listed.returncode == 0, listed.stderr
    item = re.findall(r"^\s*(I\d+)\s.*no StudyInstanceUID", listed.stdout, re.MULTILINE)[-1]
    shown = node.cli("quarantine", "show", item)
    assert shown.returncode == 0 and "Secondary Capture Image Storage" in shown.stdout
    for value in (str(ds.SOPInstanceUID), str(ds.PatientName), str(ds.PatientID)):
        assert value not in listed.stdout + shown.stdout
    spooled = node.state_dir / re.search(r"file: (\S+)", shown.stdout).group(1)
    assert spooled.exists()
    gone = node.cli("quarantine", "discard", item)
    assert gone.returncode == 0, gone.stderr
    assert not spooled.exists()
    assert item not in node.cli("quarantine", "list").stdout
    assert f'"event": "discarded", "item": "{item}"' in node.audit()
    again = node.cli("quarantine", "discard", item)
    assert again.returncode == 1 and "no quarantined instance" in again.stderr


def test_tls_handshakes_that_never_finish_block_no_one_nor_sigterm(tmp_path, study, workers):
    certs = make_certificates(tmp_path / "pki")
    node = Node(tmp_path / "tls", {**KEEP, "listen": {
        **LIMITS, "accept_timeout": 8, "workers": workers,
        "tls": {"cert": str(certs.cert), "key": str(certs.key)}}},
        client_args=("+tls", str(certs.key), str(certs.cert), "+cf", str(certs.ca)))
    client = ["+tls", str(certs.key), str(certs.cert), "+cf", str(certs.ca)]
    node.start()
    wait_for(lambda: "worker processes ready" in node.log(), 120, what="the node's worker")
    try:
        with hostile.Squatters(node.port, "tls-silent", 25), \
                hostile.Squatters(node.port, "tls-half", 25):
            proc = storescu(study.files, node.port, timeout=30, extra=client)
            assert proc.returncode == 0
            # SIGTERM with 50 unfinished handshakes open.
            started = time.monotonic()
            node.proc.terminate()
            rc = node.proc.wait(timeout=15)
            took = time.monotonic() - started
            node.proc = None
        assert rc == 0 and took < 10, (rc, took)
    finally:
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait(10)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_fills_to_the_watermark_not_to_zero(tmp_path, workers):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        files = []
        for n in range(12):  # 12 x 3 MiB into 48 MiB with a 16 MiB watermark
            ds = make_instance(generate_uid(), generate_uid(), generate_uid(), n + 1,
                               rows=1024, columns=3072)
            path = tmp_path / f"big{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        node = Node(tmp_path / "node", {**KEEP, "state_dir": str(mount / "state"),
                                         "listen": {"min_free_disk": "16M",
                                                    "workers": workers}})
        node.state_dir = mount / "state"
        node.start()
        try:
            proc = storescu(files, node.port, timeout=60, check=False)
            acknowledged = proc.stdout.count("Received Store Response (Success)")
            refused = proc.stdout.count("Refused: OutOfResources")
            assert acknowledged >= 3 and refused >= 1, proc.stdout[-2000:]
            free = os.statvfs(mount)
            assert free.f_bavail * free.f_frsize >= 15 * 2**20  # watermark minus one PDU
            # Nothing acknowledged is lost.
            stored = node.journal("SELECT COUNT(*) FROM instances")[0][0]
            assert stored == acknowledged
            assert not list((mount / "state" / "spool" / "incoming").iterdir())
        finally:
            node.stop()
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
