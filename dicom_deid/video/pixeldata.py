"""Pixel Data without loading it: where it is, its items, and file-like views over them.

A DICOM video can be gigabytes. The reader finds the Pixel Data element in the file, lists the
items of an encapsulated value by reading only their 8-byte headers, and gives PyAV a seekable
stream that concatenates the fragments (the first item is the basic offset table, empty or not).
The writer hands pydicom read-only slices of its temporary files so that the encoded stream is
copied into the DICOM file in chunks.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicom_deid.video.errors import VideoError

_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_NATIVE = frozenset(
    {ImplicitVRLittleEndian, "1.2.840.10008.1.2.1", DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}
)


@dataclass
class PixelLayout:
    """Where the Pixel Data value lies in a byte source."""

    opener: Callable[[], BinaryIO]
    encapsulated: bool
    offset: int = 0                     # native: first byte of the value
    length: int = 0                     # native: value length
    bot: tuple[int, int] | None = None  # encapsulated: (offset, length) of the basic offset table
    items: tuple[tuple[int, int], ...] = ()  # encapsulated: (offset, length) of each fragment

    @property
    def stream_length(self) -> int:
        return sum(length for _, length in self.items)


def read_header(path: Path) -> tuple[Dataset, int]:
    """The dataset up to Pixel Data and the file offset of the Pixel Data element."""
    try:
        with open(path, "rb") as fp:
            ds = dcmread(fp, stop_before_pixels=True)
            return ds, fp.tell()
    except FileNotFoundError:
        raise VideoError(path, "file not found") from None
    except (InvalidDicomError, EOFError, struct.error, ValueError, OSError, KeyError) as exc:
        raise VideoError(path, f"not a readable DICOM file ({type(exc).__name__})") from exc


def _syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid) if uid else ImplicitVRLittleEndian


def _parse_items(fp: BinaryIO, start: int, end: int | None, name: str, little: bool = True,
                 delimited: bool = True):
    """(bot, items) of an encapsulated value whose first item starts at `start`.

    delimited=False: the value ends at `end` without a sequence delimiter, as pydicom holds an
    encapsulated Pixel Data value in memory.
    """
    fmt = "<HHL" if little else ">HHL"
    fp.seek(start)
    entries: list[tuple[int, int]] = []
    pos = start
    while True:
        head = fp.read(8)
        if not head and not delimited:
            break
        if len(head) < 8:
            raise VideoError(name, "Pixel Data is truncated: the item sequence has no delimiter")
        group, elem, length = struct.unpack(fmt, head)
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            break
        if tag != _ITEM:
            raise VideoError(name, f"corrupt Pixel Data: unexpected tag ({group:04X},{elem:04X}) at byte {pos} where an item was expected")
        if length == _UNDEFINED:
            raise VideoError(name, f"corrupt Pixel Data: item of undefined length at byte {pos}")
        value_at = pos + 8
        if end is not None and value_at + length > end:
            raise VideoError(name, f"Pixel Data is truncated: item at byte {pos} claims {length} bytes past the end of the data")
        entries.append((value_at, length))
        pos = value_at + length
        fp.seek(pos)
    if not entries:
        raise VideoError(name, "corrupt Pixel Data: no basic offset table item")
    bot, items = entries[0], entries[1:]
    return bot, tuple(items)


def _file_size(fp: BinaryIO) -> int:
    here = fp.tell()
    size = fp.seek(0, io.SEEK_END)
    fp.seek(here)
    return size


def layout_from_file(path: Path, ds: Dataset, pixel_offset: int) -> PixelLayout:
    """Locate Pixel Data in a file read with stop_before_pixels (pixel_offset = fp.tell())."""
    name = str(path)
    syntax = _syntax(ds)

    def opener() -> BinaryIO:
        return open(path, "rb")

    if syntax == DeflatedExplicitVRLittleEndian:
        # The value is inside a deflate stream: no byte offset exists. Rare for video; read it whole.
        return layout_from_dataset(_read_full(path), name)
    little = syntax != ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    with opener() as fp:
        size = _file_size(fp)
        fp.seek(pixel_offset)
        head = fp.read(12 if not implicit else 8)
        if len(head) < 8:
            raise VideoError(name, "no Pixel Data element")
        endian = "<" if little else ">"
        group, elem = struct.unpack(endian + "HH", head[:4])
        if (group << 16 | elem) != _PIXEL_DATA:
            raise VideoError(name, "no Pixel Data element")
        if implicit:
            (length,) = struct.unpack(endian + "L", head[4:8])
            value_at = pixel_offset + 8
        else:
            vr = head[4:6]
            if vr in (b"OB", b"OW", b"UN", b"OF", b"OD", b"OL", b"OV"):
                (length,) = struct.unpack(endian + "L", head[8:12])
                value_at = pixel_offset + 12
            else:
                raise VideoError(name, f"corrupt Pixel Data element (VR {vr!r})")
        if length == _UNDEFINED:
            bot, items = _parse_items(fp, value_at, size, name, little)
            return PixelLayout(opener, True, bot=bot, items=items)
        if value_at + length > size:
            raise VideoError(name, f"Pixel Data is truncated: {length} bytes declared, {size - value_at} present")
        return PixelLayout(opener, False, offset=value_at, length=length)


def _read_full(path: Path) -> Dataset:
    try:
        return dcmread(path)
    except Exception as exc:  # pydicom raises many types for broken files
        raise VideoError(path, f"not a readable DICOM file ({type(exc).__name__})") from exc


def layout_from_dataset(ds: Dataset, name: str = "<dataset>") -> PixelLayout:
    """Locate Pixel Data held by a Dataset (bytes in memory or a buffered value)."""
    if "PixelData" not in ds:
        raise VideoError(name, "no Pixel Data element")
    elem = ds["PixelData"]
    if elem.is_buffered:
        buffer = elem.value

        def opener() -> BinaryIO:
            return _SharedView(buffer)  # type: ignore[return-value]
    else:
        data = elem.value
        if data is None:
            raise VideoError(name, "no Pixel Data element")

        def opener() -> BinaryIO:
            return io.BytesIO(data)
    syntax = _syntax(ds)
    has_syntax = getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta
    with opener() as fp:
        size = _file_size(fp)
        encapsulated = (
            syntax not in _NATIVE if has_syntax else (elem.is_undefined_length or _looks_encapsulated(fp))
        )
        if encapsulated:
            bot, items = _parse_items(fp, 0, size, name, delimited=False)
            return PixelLayout(opener, True, bot=bot, items=items)
    return PixelLayout(opener, False, offset=0, length=size)


def _looks_encapsulated(fp: BinaryIO) -> bool:
    fp.seek(0)
    head = fp.read(4)
    fp.seek(0)
    return head == b"\xfe\xff\x00\xe0"


class _SharedView(io.RawIOBase):
    """A private read position over a buffer someone else owns (closing leaves it open)."""

    def __init__(self, buffer: BinaryIO) -> None:
        self._buffer = buffer
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._buffer.seek(0, io.SEEK_END) + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b) -> int:
        self._buffer.seek(self._pos)
        data = self._buffer.read(len(b))
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class ConcatStream(io.RawIOBase):
    """Read-only, seekable concatenation of byte ranges of one source (the stream in the fragments)."""

    def __init__(self, opener: Callable[[], BinaryIO], segments: tuple[tuple[int, int], ...]) -> None:
        self._fp = opener()
        self._segments = segments
        self._starts: list[int] = []
        total = 0
        for _, length in segments:
            self._starts.append(total)
            total += length
        self._size = total
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        self._pos = max(0, pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b) -> int:
        want = len(b)
        done = 0
        view = memoryview(b)
        while done < want and self._pos < self._size:
            idx = self._segment_at(self._pos)
            seg_offset, seg_length = self._segments[idx]
            within = self._pos - self._starts[idx]
            take = min(want - done, seg_length - within)
            self._fp.seek(seg_offset + within)
            chunk = self._fp.read(take)
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._pos += len(chunk)
        return done

    def _segment_at(self, pos: int) -> int:
        # Binary search over segment starts; streams split into thousands of fragments exist.
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def close(self) -> None:
        if not self.closed:
            self._fp.close()
        super().close()


class FileSlice(io.BufferedIOBase):
    """A read-only view of [start, start + length) of an open file, with its own position.

    Many slices share one descriptor (os.pread does not move the shared offset), so a
    multi-frame value can be handed to pydicom as one buffer per frame without one open file each.
    """

    def __init__(self, fd: int, start: int, length: int, pad: bool = False) -> None:
        self._fd = fd
        self._start = start
        self._length = length
        self._pad = pad and length % 2 == 1
        self._pos = 0

    def _total(self) -> int:
        return self._length + (1 if self._pad else 0)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        try:
            os.fstat(self._fd)
        except OSError:
            return True
        return False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self._total() + offset
        self._pos = max(0, self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        total = self._total()
        if self._pos >= total:
            return b""
        if size is None or size < 0:
            size = total - self._pos
        size = min(size, total - self._pos)
        out = b""
        real = min(size, max(0, self._length - self._pos))
        if real:
            out = os.pread(self._fd, real, self._start + self._pos)
            if len(out) != real:
                raise OSError("temporary stream file shrank while it was being written")
        if len(out) < size:
            out += b"\x00" * (size - len(out))
        self._pos += len(out)
        return out

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)


def open_path_or_dataset(src: str | os.PathLike[str] | Dataset) -> tuple[Dataset, PixelLayout, str, Path | None]:
    """Header, pixel layout, display name and path for a file or an in-memory Dataset."""
    if isinstance(src, Dataset):
        name = Path(src.filename).name if isinstance(getattr(src, "filename", None), str) else "<dataset>"
        return src, layout_from_dataset(src, name), name, None
    path = Path(src)
    ds, offset = read_header(path)
    return ds, layout_from_file(path, ds, offset), str(path), path
