"""listen.workers > 1: receive worker processes (node/recv_pool.py, node/recv_worker.py).

The node runs as a real subprocess with two receive workers. What is checked across
processes: every instance lands in the journal and the spool; a worker killed with
SIGKILL mid-receive loses nothing it acknowledged and is started again; the pool of
connections not yet accepted is one pool for all workers; a node killed with SIGKILL takes
its workers with it. The hostile-network attacks run on two workers too
(test_hostile.py's `workers` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.node import hostile
from tests.node.factory import make_instance, write_study
from tests.node.peers import Node, storescu, wait_for

pytestmark = [pytest.mark.network, pytest.mark.slow]

KEEP = {"default_rule": {"profile": "basic", "faces": "none"},
        "processing": {"stable_seconds": 600, "workers": 1}}


def receive_workers(node: Node) -> dict[int, int]:
    """Receive worker index -> pid, from the node's children's command lines."""
    assert node.proc is not None
    found = {}
    for task in Path(f"/proc/{node.proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"dicom_deid.node.recv_worker" in argv:
                found[int(argv[argv.index(b"dicom_deid.node.recv_worker") + 1])] = int(child)
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def start(root: Path, **listen) -> Node:
    node = Node(root, {**KEEP, "listen": {"workers": 2, **listen},
                       "log": {"level": "INFO", "file": str(root / "node.log")}}).start()
    wait_for(lambda: "worker processes ready" in node.log(), 120, what="the node's worker")
    wait_for(lambda: len(receive_workers(node)) == 2, 30, what="two receive workers")
    return node


def test_two_workers_receive_everything_and_share_the_senders(tmp_path):
    studies = [write_study(tmp_path / f"s{i}", 8) for i in range(4)]
    node = start(tmp_path / "node")
    try:
        senders = [threading.Thread(target=storescu, args=(s.files, node.port),
                                    kwargs={"timeout": 60}) for s in studies]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert node.journal("SELECT COUNT(*) FROM instances")[0][0] == 32
        rows = node.journal("SELECT path FROM instances")
        assert all((node.state_dir / path).stat().st_size > 0 for (path,) in rows)
        assert node.audit().count('"event": "received"') == 32
        log = node.log()
        # Each worker served associations (least busy first), and logs as itself.
        assert "receive-0 dicom_deid.node.receiver: association from PACS" in log
        assert "receive-1 dicom_deid.node.receiver: association from PACS" in log
        for study in studies:
            ds = dcmread(study.files[0])
            assert str(ds.PatientName) not in log and study.study_uid not in log
        workers = receive_workers(node)
        assert node.stop() == 0
        assert all(gone(pid) for pid in workers.values())
        assert "journal rows from receive workers in" in node.log()
    finally:
        node.stop()


def _send(port: int, datasets: list, acked: list[str], refused: list[str]) -> None:
    """One association; each instance whose C-STORE succeeded goes into `acked`."""
    from pynetdicom import AE
    ae = AE(ae_title="PACS")
    ae.add_requested_context(str(datasets[0].SOPClassUID),
                             str(datasets[0].file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM-DEID")
    assert assoc.is_established
    try:
        for ds in datasets:
            if not assoc.is_established:
                break
            status = assoc.send_c_store(ds)
            if status and status.Status == 0x0000:
                acked.append(str(ds.SOPInstanceUID))
            else:
                refused.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()


def test_worker_killed_mid_receive_loses_nothing_acknowledged(tmp_path):
    node = start(tmp_path / "node")
    study_uid = generate_uid()
    batches = [[make_instance(study_uid, generate_uid(), generate_uid(), n + 1)
                for n in range(300)] for _ in range(2)]
    acked: list[list[str]] = [[], []]
    refused: list[list[str]] = [[], []]
    try:
        workers = receive_workers(node)
        senders = [threading.Thread(target=_send, args=(node.port, batches[i], acked[i],
                                                        refused[i])) for i in range(2)]
        for sender in senders:
            sender.start()
            time.sleep(0.5)  # the second association goes to the other (less busy) worker
        wait_for(lambda: len(acked[0]) + len(acked[1]) >= 40, 60, interval=0.05,
                 what="acknowledgements")
        os.kill(workers[0], signal.SIGKILL)
        for sender in senders:
            sender.join(120)
        # One association died with its worker, mid-receive; the other finished.
        assert sorted(len(a) for a in acked)[0] < 300 <= sorted(len(a) for a in acked)[1]
        wait_for(lambda: "receive worker 0 started again" in node.log(), 60,
                 what="the worker to be started again")
        assert "exited with signal 9" in node.log()
        # Nothing acknowledged is lost: a row for each, its file holding that instance.
        rows = dict(node.journal("SELECT sop_instance_uid, path FROM instances"))
        for uid in acked[0] + acked[1]:
            assert uid in rows, "an acknowledged instance has no journal row"
            assert dcmread(node.state_dir / rows[uid]).SOPInstanceUID == uid
        # The restarted worker takes new senders.
        restarted = receive_workers(node)
        assert restarted[0] != workers[0] and restarted[1] == workers[1]
        again = write_study(tmp_path / "again", 4)
        senders = [threading.Thread(target=storescu, args=(again.files, node.port),
                                    kwargs={"timeout": 60}) for _ in range(2)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert "receive-0 dicom_deid.node.receiver: association from PACS released" in \
            node.log().split("receive worker 0 started again", 1)[1]
        # A restart of the node finds every acknowledged instance still in place.
        assert node.stop() == 0
        node.start()
        for uid in acked[0] + acked[1]:
            path = node.journal("SELECT path FROM instances WHERE sop_instance_uid = ?",
                                (uid,))[0][0]
            assert (node.state_dir / path).exists()
    finally:
        node.stop()


def test_the_pool_of_unaccepted_connections_spans_the_workers(tmp_path):
    # accept_timeout 30 s: a connection closed sooner was evicted, not timed out.
    node = start(tmp_path / "node", accept_timeout=30, max_pending_per_address=2)
    try:
        first, second = hostile.connect(node.port), hostile.connect(node.port)
        time.sleep(0.5)  # handed to the two workers, one each
        third = hostile.connect(node.port)
        with first, second, third:
            assert hostile.closed_by_peer(first, 5)  # the oldest gave way
            second.sendall(hostile.associate_rq(calling="PACS"))
            assert second.recv(1) == b"\x02"  # A-ASSOCIATE-AC: the others still served
        assert "max_pending_per_address" in node.log()
    finally:
        node.stop()


def test_a_node_killed_takes_its_workers_and_restarts_clean(tmp_path):
    node = start(tmp_path / "node")
    study = write_study(tmp_path / "s", 6)
    storescu(study.files, node.port, timeout=60)
    workers = receive_workers(node)
    node.kill9()
    # PR_SET_PDEATHSIG: no orphan keeps receiving (or acknowledging) behind the new node.
    wait_for(lambda: all(gone(pid) for pid in workers.values()), 10,
             what="the receive workers to die with the node")
    node.start()
    try:
        wait_for(lambda: len(receive_workers(node)) == 2, 30, what="two receive workers")
        assert node.journal("SELECT COUNT(*) FROM instances")[0][0] == 6
        assert subprocess.run(["echoscu", "-aet", "PACS", "-aec", "DICOM-DEID", "127.0.0.1",
                               str(node.port)], capture_output=True).returncode == 0
    finally:
        node.stop()
