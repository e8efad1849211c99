"""A large instance is flushed to disk behind its writer while it arrives
(spool.FlushBehind, Reception), and a failed flush refuses the instance."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_deid.node import spool as spool_module
from dicom_deid.node.receiver import WRITEBACK_EVERY, Reception
from dicom_deid.node.spool import FlushBehind
from tests.node.factory import make_instance
from tests.node.peers import storescu, wait_for

CHUNK = bytes(range(256)) * 1024  # 256 KiB, a PDU's worth


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def flushes(monkeypatch):
    """fdatasync calls made by flush-behind threads (other threads' calls pass through)."""
    calls: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        if threading.current_thread().name == "flush-behind":
            calls.append(fd)
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", spy)
    return calls


def test_a_flush_runs_behind_the_writer_one_at_a_time(tmp_path, flushes):
    before = open_fds()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    flusher = FlushBehind(fd)
    os.write(fd, CHUNK)
    assert flusher.request()
    wait_for(lambda: flusher.flushes == 1, 10, what="the first flush")
    assert flushes and fd not in flushes  # its own duplicate of the descriptor
    os.close(fd)  # the writer may close first: the flusher holds its own descriptor
    assert flusher.stop() is None
    assert not flusher.request()  # stopped: nothing more is started
    assert open_fds() == before


def test_a_large_reception_is_flushed_while_it_arrives(tmp_path, flushes):
    before = open_fds()
    reception = Reception(tmp_path, 0)
    per_step = WRITEBACK_EVERY // len(CHUNK)
    for _ in range(per_step):
        reception.write(CHUNK)
    # The first WRITEBACK_EVERY bytes are flushed before anything more is written.
    wait_for(lambda: len(flushes) == 1, 10, what="a flush behind the writer")
    for _ in range(4 * per_step):
        reception.write(CHUNK)
    reception.close()
    assert not reception.failed
    assert Path(reception.name).read_bytes() == CHUNK * 5 * per_step
    assert len(flushes) >= 1  # later requests may find one running, or the writer done
    assert open_fds() == before  # the flusher's descriptor is closed, its thread ended
    assert not [t for t in threading.enumerate() if t.name == "flush-behind"]


def test_a_small_reception_starts_no_flusher(tmp_path, flushes):
    reception = Reception(tmp_path, 0)
    reception.write(CHUNK)
    reception.close()
    assert flushes == [] and reception._flusher is None


def test_a_failed_flush_refuses_the_instance(tmp_path, monkeypatch):
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(spool_module.os, "fdatasync", broken)
    reception = Reception(tmp_path, 0)
    for _ in range(2 * WRITEBACK_EVERY // len(CHUNK)):
        reception.write(CHUNK)
    flusher = reception._flusher
    assert flusher is not None
    wait_for(lambda: flusher.error is not None, 10, what="the flush behind to fail")
    reception.settle()  # what the store handler does first
    assert reception.failed == "write failed (Input/output error)"
    assert Path(reception.name).stat().st_size == 0  # the space is given back
    reception.close()


@pytest.mark.network
@pytest.mark.parametrize("lean", [True, False])
def test_an_instance_whose_flush_fails_is_refused_out_of_resources(tmp_path, monkeypatch,
                                                                   lean):
    """Both receiving paths: 0xA700 for the instance, no row, nothing left in the spool.
    The kernel may not report a write-back error again to the final fsync once the flush
    behind has seen it, so the flusher's error must decide."""
    from tests.node.test_fast_store import Here

    real = os.fdatasync

    def failing(fd: int) -> None:
        if threading.current_thread().name == "flush-behind":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", failing)
    ds = make_instance(generate_uid(), generate_uid(), generate_uid(), 1, rows=2048,
                       columns=1536)  # 3 MiB
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    here = Here(tmp_path / "node", lean)
    try:
        out = storescu([path], here.port, check=False)
        assert "Received Store Response (Refused: OutOfResources)" in out.stdout, \
            out.stdout[-2000:]
        assert here.rows() == []
        assert here.spooled() == {}
        assert not here.incoming()
        assert here.receiver.served == ({"lean": 1, "pynetdicom": 0} if lean
                                        else {"lean": 0, "pynetdicom": 1})
    finally:
        here.stop()
