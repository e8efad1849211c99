"""When a received instance is durable enough to acknowledge, with few fsyncs.

Every instance is acknowledged only once it would survive a power cut: its journal row is
committed (SQLite WAL, synchronous=FULL) and its bytes are on disk. How the bytes get there
depends on the size:

- small instances (<= INLINE_MAX): the bytes go into the journal with the row
  (`inline_data`), in the same transaction. Commits of concurrent associations are grouped
  (GroupCommit): one WAL fsync for all that wait, and no fsync of the spool file or its
  folder before the acknowledgement. The spool file is written (page cache) and renamed as
  before; Hardener makes those files and their names durable in the background, a batch
  at a time (one syncfs, or an fsync per file and folder), then drops the held bytes.
  After a crash or power cut, `restore_inline` rewrites any spool file whose bytes are
  held and that is missing or differs.
- larger instances: the spool file and its folder are fsync'd in the association's thread
  (a second copy through the WAL would double the writes), then the row, grouped as above.

A kill -9 loses nothing either way (the page cache outlives the process); the held bytes
are what makes the small-instance path safe against power loss too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from dicom_deid.node.journal import Journal, ReceivedInstance
from dicom_deid.node.logs import short_reason
from dicom_deid.node.spool import fsync_dir, fsync_file

LOG = logging.getLogger(__name__)

# Largest instance whose bytes travel through the journal's WAL. Above it the file's own
# fsync costs little next to writing the data (and a second copy would double the I/O).
INLINE_MAX = 1024 * 1024
# Hardener: a batch at most every this many seconds, sooner when this many bytes are held.
HARDEN_EVERY = 1.0
HARDEN_BYTES = 32 * 1024 * 1024
_BATCH = 1024


class _Pending:
    __slots__ = ("item", "data", "result", "error", "done")

    def __init__(self, item: ReceivedInstance, data: bytes | None):
        self.item = item
        self.data = data
        self.result: tuple[int, list[int]] | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Journal rows of instances arriving on concurrent associations committed together
    (group commit): one transaction, one WAL fsync for all that wait instead of one each
    after the other. Each caller returns only once its own row (and its held bytes, if
    any) is committed; the first waiter to find no commit running leads the next one."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._busy = False
        self.commits = 0  # transactions run (diagnostics and tests)

    def record(self, item: ReceivedInstance, data: bytes | None = None) -> tuple[int, list[int]]:
        pending = _Pending(item, data)
        batch: list[_Pending] | None = None
        with self._cond:
            self._queue.append(pending)
            while not pending.done:
                if not self._busy:  # lead: commit everything queued, ours included
                    batch, self._queue, self._busy = self._queue, [], True
                    break
                self._cond.wait()
        if batch is not None:
            try:
                results = self.journal.record_received_many(
                    [p.item for p in batch], data=[p.data for p in batch])
                for waiting, result in zip(batch, results, strict=True):
                    waiting.result = result
            except BaseException as exc:
                for waiting in batch:
                    waiting.error = exc
            finally:
                with self._cond:
                    self.commits += 1
                    for waiting in batch:
                        waiting.done = True
                    self._busy = False
                    self._cond.notify_all()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result


def harden(state_dir: Path, journal: Journal, limit: int | None = None,
           restore: bool = False) -> tuple[int, int]:
    """Make the spool files of instances whose bytes the journal holds durable, then drop
    the bytes. restore: first rewrite any such file that is missing or differs from the
    held bytes (after a power cut). Returns (files looked at, files rewritten)."""
    held = journal.inline_files(limit)
    if not held:
        return 0, 0
    rewritten, present = 0, []
    for record in held:
        path = state_dir / record.path
        if restore:
            data = journal.inline_bytes(record.id)
            if data is None:
                continue
            if not _same_bytes(path, data):
                _rewrite(path, data)
                rewritten += 1
        # Gone since it was listed: superseded by a re-sent copy (its row, and so the
        # held bytes, went with it).
        if path.exists():
            present.append((record.id, path))
    if syncfs(state_dir):
        done = [instance_id for instance_id, _ in present]
    else:
        done, folders = [], set()
        for instance_id, path in present:
            try:
                fsync_file(path)
            except FileNotFoundError:
                continue
            folders.add(path.parent)
            done.append(instance_id)
        for folder in folders:
            fsync_dir(folder)
    journal.drop_inline(done)
    return len(held), rewritten


def syncfs(path: Path) -> bool:
    """Flush the whole file system that holds path (syncfs(2): every file's data and every
    name, one journal commit), where a batch of fsyncs would flush once per file and per
    folder (the spool's 256 buckets put nearly every file in a folder of its own). It also
    flushes other programs' writes to that file system; it runs in the background, never
    inside an acknowledgement. False where the C library has no syncfs (not Linux): the
    caller fsyncs each file and folder instead. Linux reports write-back errors through it
    since 5.8."""
    global _SYNCFS
    if _SYNCFS is None:
        try:
            _SYNCFS = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _SYNCFS = False
    if _SYNCFS is False:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)
    return True


_SYNCFS: Any = None


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _rewrite(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.parent / f".restore-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def restore_inline(state_dir: Path, journal: Journal) -> int:
    """At start, before anything reads the spool: every instance acknowledged from its held
    bytes gets its spool file back as acknowledged (a power cut can lose a file that was
    never fsync'd, or leave it short). Returns how many files were rewritten."""
    rewritten = harden(state_dir, journal, restore=True)[1]
    if rewritten:
        LOG.warning("restored %d spooled instances from the journal (their files were lost "
                    "or incomplete: power cut?)", rewritten)
    return rewritten


class Hardener:
    """The background thread that makes small instances' spool files durable in batches
    (one fsync per file and per folder, none of them on an association's path), and
    checkpoints the WAL, on a journal connection of its own."""

    def __init__(self, state_dir: Path, journal_path: Path, every: float = HARDEN_EVERY):
        self.state_dir = state_dir
        self.journal_path = journal_path
        self.journal: Journal | None = None  # its own connection, opened by start()
        self.every = every
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._held = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.journal = Journal(self.journal_path)
        self._thread = threading.Thread(target=self._run, name="spool-harden", daemon=True)
        self._thread.start()

    def added(self, size: int) -> None:
        with self._lock:
            self._held += size
            if self._held >= HARDEN_BYTES:
                self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every)
            self._wake.clear()
            self.run_once()

    def run_once(self) -> None:
        with self._lock:
            self._held = 0
        if self.journal is None:
            return
        try:
            while harden(self.state_dir, self.journal, limit=_BATCH)[0] == _BATCH:
                pass
            # The receiver's connection leaves checkpoints to this one (defer_checkpoints),
            # so copying the WAL into the database is never part of an acknowledgement.
            self.journal.checkpoint()
        except Exception as exc:  # retried next time; the bytes stay held meanwhile
            LOG.error("could not make spooled instances durable (retried): %s",
                      short_reason(exc))

    def stop(self) -> None:
        """Finish: the last batch is hardened so that a clean stop leaves nothing held."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        with contextlib.suppress(Exception):
            self.run_once()
        if self.journal is not None:
            self.journal.close()
            self.journal = None
