"""Writing a file so that its name never shows a half-written file: one helper for all.

    write_atomic(data, path)                  # bytes, str or a pydicom Dataset
    with atomic_path(path) as tmp:            # for writers that need a path (cv2, PyAV, copy)
        write_somehow(tmp)

The data goes to a temporary file beside the target (same filesystem, so the rename is
atomic), named `.tmp-<name>.<random><suffix>`: the node's recovery sweeps `.tmp-*` out of its
outbox and quarantine after a kill. `durable` fsyncs the file before the rename and the folder
after it, so that once the call returns the file survives a power cut (the node needs it; the
CLI does not). `public` gives the file the permissions of an ordinary new file (mkstemp makes
it 0600), for outputs a user reads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["atomic_path", "publish", "temp_beside", "write_atomic"]


def temp_beside(path: Path) -> Path:
    """A new empty temporary file in path's folder (created if need be), for path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.", suffix=path.suffix)
    os.close(fd)
    return Path(tmp)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):   # not every filesystem lets a folder be fsync'd
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path, path: Path, *, durable: bool = True, public: bool = False) -> None:
    """Rename the finished temporary file onto path (see the module doc for the flags)."""
    if durable:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if public:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = True, public: bool = False) -> Iterator[Path]:
    """A temporary path to write to; renamed onto path when the block ends without an
    exception, removed otherwise."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        yield tmp
        publish(tmp, path, durable=durable, public=public)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(data: bytes | str | Dataset, path: Path, *, durable: bool = True,
                 public: bool = False) -> None:
    """Write bytes, text (UTF-8) or a dataset (as a DICOM file) to path atomically."""
    with atomic_path(path, durable=durable, public=public) as tmp, tmp.open("wb") as handle:
        if isinstance(data, bytes):
            handle.write(data)
        elif isinstance(data, str):
            handle.write(data.encode("utf-8"))
        else:
            data.save_as(handle, enforce_file_format=True)
