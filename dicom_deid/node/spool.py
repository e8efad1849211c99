"""Durable file operations for the state folder: spool, outbox, quarantine.

Everything the node acknowledges must survive a crash or power loss, so a file is
fsync'd, renamed into place, and its directory fsync'd before anyone relies on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

PRIVATE_DIR = 0o700


def ensure_private_dir(path: Path) -> Path:
    """Create path (and parents) readable by the owner only; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if (path.stat().st_mode & 0o777) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Any = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a file's range to disk now (sync_file_range(2),
    SYNC_FILE_RANGE_WRITE: it does not wait, and guarantees nothing). A large instance
    then reaches the disk while it still arrives, and the fsync before its acknowledgement
    has little left to do. A hint only: errors are left to that fsync to report; a no-op
    where the C library lacks the call."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            call = ctypes.CDLL(None, use_errno=True).sync_file_range
            call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            call.restype = ctypes.c_int
            _sync_file_range = call
        except (OSError, AttributeError):
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class FlushBehind:
    """fdatasync(2) of a file still being written, in a thread of its own, each time the
    writer asks and the previous one has finished.

    Why: on this kind of disk (a virtual disk with a write-back cache) an fsync costs in
    proportion to the bytes written since the last flush, not only to what is still in the
    page cache: sync_file_range moves the data to the device, but the flush of the
    device's cache at the final fsync still took ~0.1 s for 4 concurrent 16 MiB
    instances. Flushed behind the writer, as the data arrives, the final fsync has only
    the tail left (~10-30 ms measured, benchmarks/node_reception_tail.py).

    It holds its own duplicate of the descriptor, so the writer may close its own at any
    time. An error is kept, not only logged: a write-back error reported here is marked
    seen by the kernel, so a later fsync through a fresh descriptor may not report it
    again; the writer must check `stop()`'s result before the file counts as durable."""

    def __init__(self, fd: int):
        self._fd = os.dup(fd)
        self._wake = threading.Event()
        self._idle = True
        self._stopping = False
        self.flushes = 0  # completed (tests, diagnostics)
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="flush-behind", daemon=True)
        self._thread.start()

    def request(self) -> bool:
        """Start a flush of everything written so far; False if one is still running (the
        caller may hint write-back instead)."""
        if not self._idle or self._stopping:
            return False
        self._idle = False
        self._wake.set()
        return True

    def stop(self) -> OSError | None:
        """Wait for a flush in progress or requested (the final fsync would wait for the
        same I/O) and end the thread. Returns the error a flush met, if any."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        return self.error

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if not self._idle:  # requested (a request just before stop() included)
                    try:
                        os.fdatasync(self._fd)
                    except OSError as exc:
                        self.error = exc
                        return
                    self.flushes += 1
                    self._idle = True
                if self._stopping:
                    return
        finally:
            os.close(self._fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Layout: spool/incoming/ (partial receptions), spool/<xx>/<uuid>.dcm (acknowledged)."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.root = ensure_private_dir(state_dir / "spool")
        self.incoming = ensure_private_dir(self.root / "incoming")
        # All 256 buckets up front: no mkdir (and fsync of the spool) while receiving.
        missing = [self.root / f"{i:02x}" for i in range(256)
                   if not (self.root / f"{i:02x}").is_dir()]
        for bucket in missing:
            ensure_private_dir(bucket)
        if missing:
            fsync_dir(self.root)

    def new_relative_path(self) -> str:
        """A fresh spool location, relative to the state dir (journalled before the rename)."""
        name = uuid.uuid4().hex
        return f"spool/{name[:2]}/{name}.dcm"

    def commit(self, received: Path, relative: str, synced: bool = False) -> Path:
        """Make a fully received file durable at its final spool location.

        synced: the caller has fsync'd the file already. The folder it leaves is not
        fsync'd: should its old name survive a crash, recovery clears spool/incoming.
        """
        final = self.state_dir / relative
        if not synced:
            fsync_file(received)
        parent = final.parent
        if not parent.exists():
            ensure_private_dir(parent)
            fsync_dir(parent.parent)
        os.replace(received, final)
        fsync_dir(parent)
        return final

    def place(self, received: Path, relative: str) -> Path:
        """Rename a received file to its spool location; the caller makes the data and
        the rename durable (fsync of the file, then of its folder) before relying on it."""
        final = self.state_dir / relative
        try:
            # The buckets exist (made at start): no stat of one per instance.
            os.replace(received, final)
        except FileNotFoundError:
            if final.parent.is_dir():
                raise  # the received file is what is missing
            ensure_private_dir(final.parent)
            fsync_dir(final.parent.parent)
            os.replace(received, final)
        return final

    def sweep_orphans(self, known: set[str]) -> int:
        """Delete spooled files no journal row names: renamed in, then a crash before
        their row was committed, so never acknowledged."""
        removed = 0
        for bucket in self.root.iterdir():
            if bucket == self.incoming or not bucket.is_dir():
                continue
            for entry in bucket.iterdir():
                if f"spool/{bucket.name}/{entry.name}" not in known and entry.is_file():
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed

    def write_bytes(self, data: bytes, relative: str) -> Path:
        """Write data durably at a spool location (used when the dataset is in memory)."""
        tmp = self.incoming / f"{uuid.uuid4().hex}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.commit(tmp, relative)

    def clear_incoming(self) -> int:
        """Remove partial receptions left by a crash: none of them was acknowledged."""
        removed = 0
        for entry in self.incoming.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def sweep_incoming(self, idle_for: float) -> int:
        """Remove partial receptions nobody has written to for ``idle_for`` seconds: a live
        association writes more often than that, so none of them was acknowledged."""
        horizon = time.time() - idle_for
        removed = 0
        for entry in self.incoming.iterdir():
            with contextlib.suppress(OSError):  # renamed into the spool meanwhile
                if entry.is_file() and entry.stat().st_mtime < horizon:
                    entry.unlink()
                    removed += 1
        return removed


def remove_file(path: Path) -> None:
    """Delete a file we own; a missing file is already what we wanted."""
    path.unlink(missing_ok=True)


def free_bytes(path: Path | str) -> int:
    return shutil.disk_usage(path).free
