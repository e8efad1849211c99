"""Acknowledgement durability with few fsyncs (dicom_deid/node/commit.py).

A power cut cannot be produced here; it is simulated by what it may do to a spool file that
was never fsync'd (gone, short, zero-filled, or its rename lost), after the process is gone.
"""

from __future__ import annotations

import threading

import pytest

from dicom_deid.config import parse_config
from dicom_deid.header.keys import load_key
from dicom_deid.node import commit
from dicom_deid.node import receiver as receiver_module
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.commit import GroupCommit, Hardener, harden
from dicom_deid.node.journal import Journal, ReceivedInstance
from dicom_deid.node.receiver import Receiver
from dicom_deid.node.service import ensure_node_key, recover
from dicom_deid.node.spool import Spool
from tests.node.factory import write_study
from tests.node.peers import free_port, require_tool, storescu


def _item(n: int, path: str, size: int = 1) -> ReceivedInstance:
    return ReceivedInstance(
        study_uid="1.2.3.4", study_token="S-1", sop_instance_uid=f"1.2.3.4.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax="1.2.840.10008.1.2",
        modality="OT", study_description="", calling_aet="PACS", called_aet="DICOM-DEID",
        path=path, size=size)


class _HeldCommit(Journal):
    """A journal whose commit waits for the test (in place of a slow fsync, which SQLite
    does in C where a test cannot hold it)."""

    def __init__(self, path):
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def record_received_many(self, items, now=None, data=None):
        self.batches.append(len(items))
        self.entered.set()
        assert self.release.wait(30)
        return super().record_received_many(items, now, data)


def test_group_commit_acknowledges_only_after_the_shared_commit(tmp_path):
    journal = _HeldCommit(tmp_path / "journal.sqlite")
    group = GroupCommit(journal)
    returned: dict[int, tuple[int, list[int]]] = {}

    def one(n: int) -> None:
        returned[n] = group.record(_item(n, f"spool/00/{n}.dcm", 4), data=b"data")

    first = threading.Thread(target=one, args=(0,))
    first.start()
    assert journal.entered.wait(10)  # 0 leads a commit, held "in its fsync"
    others = [threading.Thread(target=one, args=(n,)) for n in range(1, 6)]
    for t in others:
        t.start()
    first.join(0.5)
    assert not returned, "acknowledged before its commit was on disk"
    journal.release.set()
    for t in [first, *others]:
        t.join(30)
    assert sorted(returned) == list(range(6))
    assert journal.batches[0] == 1 and sum(journal.batches) == 6
    assert len(journal.batches) == 2, "the five that waited meanwhile share one commit"
    other = Journal(tmp_path / "journal.sqlite")  # a second connection sees what was acked
    assert other.query("SELECT COUNT(*) FROM inline_data")[0][0] == 6
    assert {r[0] for r in other.query("SELECT id FROM instances")} == \
        {returned[n][0] for n in range(6)}


def test_a_failed_group_commit_acknowledges_none_of_its_instances(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    group = GroupCommit(journal)
    journal.conn.execute("PRAGMA query_only = ON")  # every write now fails
    with pytest.raises(Exception, match="readonly"):
        group.record(_item(1, "spool/00/1.dcm"), data=b"x")
    journal.conn.execute("PRAGMA query_only = OFF")
    assert journal.query("SELECT COUNT(*) FROM instances")[0][0] == 0
    group.record(_item(2, "spool/00/2.dcm"), data=b"y")  # the next group is not stuck


@pytest.mark.parametrize("with_syncfs", [True, False])
def test_hardener_makes_files_durable_then_drops_the_held_bytes(tmp_path, monkeypatch,
                                                                 with_syncfs):
    if not with_syncfs:  # as on a system without syncfs(2): an fsync per file and folder
        monkeypatch.setattr(commit, "_SYNCFS", False)
    else:
        assert commit.syncfs(tmp_path), "this Linux has syncfs(2)"
    spool = Spool(tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    group = GroupCommit(journal)
    ids = []
    for n in range(3):
        path = spool.new_relative_path()
        (tmp_path / path).write_bytes(b"instance %d" % n)
        ids.append(group.record(_item(n, path), data=b"instance %d" % n)[0])
    # A copy re-sent before processing supersedes the first: its bytes go with its row.
    journal.drop_superseded([ids[0]])
    assert [f.id for f in journal.inline_files()] == ids[1:]
    hardener = Hardener(tmp_path, tmp_path / "journal.sqlite", every=0.05)
    hardener.start()
    try:
        deadline = threading.Event()
        for _ in range(100):
            if not journal.inline_files():
                break
            deadline.wait(0.05)
        assert journal.inline_files() == []
        assert journal.query("SELECT COUNT(*) FROM inline_data")[0][0] == 0
    finally:
        hardener.stop()


@pytest.mark.parametrize("damage", ["missing", "short", "zeros", "rename-lost"])
def test_restore_rewrites_a_held_instance_a_power_cut_damaged(tmp_path, damage):
    spool = Spool(tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    data = bytes(range(256)) * 40
    path = spool.new_relative_path()
    final = tmp_path / path
    final.write_bytes(data)
    kept_path = spool.new_relative_path()
    (tmp_path / kept_path).write_bytes(b"intact")
    group = GroupCommit(journal)
    iid = group.record(_item(1, path, len(data)), data=data)[0]
    group.record(_item(2, kept_path, 6), data=b"intact")
    if damage == "missing":
        final.unlink()
    elif damage == "short":
        final.write_bytes(data[:1000])
    elif damage == "zeros":
        final.write_bytes(bytes(len(data)))
    else:  # the rename never reached the disk: the file is still in incoming/
        final.rename(spool.incoming / "tmpabc.dcm")
    journal.close()

    config = parse_config({"state_dir": str(tmp_path)})
    journal = Journal(tmp_path / "journal.sqlite")
    recover(config, journal, spool)
    assert final.read_bytes() == data
    assert (tmp_path / kept_path).read_bytes() == b"intact"
    assert journal.inline_files() == [] and journal.inline_bytes(iid) is None
    assert journal.query("SELECT COUNT(*) FROM instances WHERE state = 'received'")[0][0] == 2
    assert not list(spool.incoming.iterdir())
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".restore-")]
    assert harden(tmp_path, journal) == (0, 0)


def test_acknowledged_small_instances_survive_a_simulated_power_cut(tmp_path, monkeypatch):
    """Real storescu into a real receiver; the larger instances take the fsync path, the
    smaller ones the journal. Then the process is gone without a clean stop (as kill -9
    leaves it), and every spool file not fsync'd yet is damaged as a power cut could."""
    require_tool("storescu")
    small = write_study(tmp_path / "small", 6, size=16)
    large = write_study(tmp_path / "large", 2, size=160)  # ~25 KiB each
    monkeypatch.setattr(receiver_module, "INLINE_MAX", 16 * 1024)
    config = parse_config({"state_dir": str(tmp_path / "st"),
                           "listen": {"port": free_port(), "min_free_disk": "1M"}})
    ensure_node_key(config.key_file)
    audit = AuditLog(config.audit_log)
    receiver = Receiver(config, load_key(config.key_file), audit)
    receiver._hardener.every = 3600  # keep everything held: the cut comes before a batch
    receiver.start()
    try:
        storescu([*small.files, *large.files], config.listen.port)
    finally:
        receiver._server.shutdown()  # no receiver.stop(): it would harden the last batch
        receiver.journal.close()
        audit.close()

    journal = Journal(config.journal_path)
    rows = dict(journal.query("SELECT id, path FROM instances"))
    assert len(rows) == 8
    held = {f.id: journal.inline_bytes(f.id) for f in journal.inline_files()}
    assert len(held) == 6, "the six small instances are held, the two larger are not"
    for iid in set(rows) - set(held):  # fsync'd before their acknowledgement: kept as is
        assert (config.state_dir / rows[iid]).stat().st_size > 16 * 1024
    for n, iid in enumerate(sorted(held)):
        spooled = config.state_dir / rows[iid]
        assert spooled.read_bytes() == held[iid]
        if n % 3 == 0:
            spooled.unlink()
        elif n % 3 == 1:
            spooled.write_bytes(held[iid][: len(held[iid]) // 2])
    journal.close()

    journal = Journal(config.journal_path)
    recover(config, journal, Spool(config.state_dir))
    for iid, data in held.items():
        assert (config.state_dir / rows[iid]).read_bytes() == data
    assert journal.query("SELECT COUNT(*) FROM instances WHERE state = 'received'")[0][0] == 8
    assert journal.inline_files() == []
    journal.close()


def test_a_clean_stop_leaves_no_instance_held_in_the_journal(tmp_path):
    require_tool("storescu")
    study = write_study(tmp_path / "study", 5, size=16)
    config = parse_config({"state_dir": str(tmp_path / "st"),
                           "listen": {"port": free_port(), "min_free_disk": "1M"}})
    ensure_node_key(config.key_file)
    audit = AuditLog(config.audit_log)
    receiver = Receiver(config, load_key(config.key_file), audit)
    receiver._hardener.every = 3600
    receiver.start()
    try:
        storescu(study.files, config.listen.port)
        assert len(receiver.journal.inline_files()) == 5
        # Checkpoints are the hardener's, never inside an acknowledgement.
        assert receiver.journal.query("PRAGMA wal_autocheckpoint") == [(0,)]
    finally:
        receiver.stop()
        audit.close()
    journal = Journal(config.journal_path)
    assert journal.query("SELECT COUNT(*) FROM inline_data")[0][0] == 0
    assert journal.query("SELECT COUNT(*) FROM instances")[0][0] == 5
    journal.close()


def test_dropped_instance_bytes_do_not_stay_in_the_journal_file(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    group = GroupCommit(journal)
    marker = b"PATIENT-PIXELS-" * 600  # ~9 KB: spills into overflow pages
    path = "spool/00/a.dcm"
    (tmp_path / "spool" / "00").mkdir(parents=True)
    (tmp_path / path).write_bytes(marker)
    group.record(_item(1, path, len(marker)), data=marker)
    harden(tmp_path, journal)
    journal.checkpoint()
    journal.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    journal.close()
    assert b"PATIENT-PIXELS-" not in (tmp_path / "journal.sqlite").read_bytes()


def test_a_failed_flush_keeps_the_bytes_held_and_is_retried(tmp_path, monkeypatch, caplog):
    spool = Spool(tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    path = spool.new_relative_path()
    (tmp_path / path).write_bytes(b"pixels")
    GroupCommit(journal).record(_item(1, path, 6), data=b"pixels")

    def failing(_path):
        raise OSError(5, "syncfs of the state folder failed: Input/output error")

    monkeypatch.setattr(commit, "syncfs", failing)
    hardener = Hardener(tmp_path, tmp_path / "journal.sqlite")
    hardener.journal = Journal(tmp_path / "journal.sqlite")  # as start() does, no thread
    hardener.run_once()
    assert "could not make spooled instances durable (retried)" in caplog.text
    assert len(journal.inline_files()) == 1  # not durable: still held
    monkeypatch.undo()
    hardener.run_once()
    assert journal.inline_files() == []
    hardener.journal.close()
