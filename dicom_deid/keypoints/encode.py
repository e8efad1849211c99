"""Explicit VR little endian encoding of the SR's per-frame SCOORD items, straight to bytes.

A minute of video is 7200 SCOORD items (four sets a frame), each with its IMAGE reference;
as pydicom Datasets they take about 15 s to build and write and some 300 MB of memory, as bytes
well under a second. The bytes go into the SR as the raw value of each set container's Content
Sequence: pydicom writes a raw element as it is and parses it when it is read, so the file is
an ordinary one (dciodvfy, dsrdump and highdicom read it; the tests check all three).

Only explicit VR little endian is produced, the transfer syntax highdicom gives the SR.
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_ITEM = b"\xfe\xff\x00\xe0"


def element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        raise ValueError(f"({group:04X},{elem:04X}) value has odd length {len(value)}")
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    if len(value) > 0xFFFE:
        raise ValueError(f"({group:04X},{elem:04X}) {vr} value too long: {len(value)} bytes")
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def text(group: int, elem: int, vr: str, value: str) -> bytes:
    """A string element, padded to even length (UI with NUL, others with a space)."""
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return element(group, elem, vr, raw)


def item(body: bytes) -> bytes:
    return _ITEM + struct.pack("<I", len(body)) + body


def sequence(group: int, elem: int, items: bytes) -> bytes:
    return element(group, elem, "SQ", items)


def dataset_item(ds: Dataset) -> bytes:
    """A pydicom Dataset (e.g. a highdicom content item) encoded as one sequence item."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return item(fp.getvalue())


def code_sequence(group: int, elem: int, value: str, scheme: str, meaning: str) -> bytes:
    body = (text(0x0008, 0x0100, "SH", value) + text(0x0008, 0x0102, "SH", scheme)
            + text(0x0008, 0x0104, "LO", meaning))
    return sequence(group, elem, item(body))


class ScoordFrames:
    """Encodes `SCOORD MULTIPOINT <concept>` items SELECTED FROM one frame of one instance."""

    def __init__(self, concept: tuple[str, str, str], class_uid: str, instance_uid: str) -> None:
        source = ("121112", "DCM", "Source of Measurement")
        self._uids = text(0x0008, 0x1150, "UI", class_uid) + text(0x0008, 0x1155, "UI",
                                                                    instance_uid)
        self._image_tail = (text(0x0040, 0xA010, "CS", "SELECTED FROM")
                            + text(0x0040, 0xA040, "CS", "IMAGE")
                            + code_sequence(0x0040, 0xA043, *source))
        self._head = (text(0x0040, 0xA010, "CS", "CONTAINS") + text(0x0040, 0xA040, "CS", "SCOORD")
                      + code_sequence(0x0040, 0xA043, *concept))
        self._type = text(0x0070, 0x0023, "CS", "MULTIPOINT")

    def encode(self, frame: int | None, xy: np.ndarray) -> bytes:
        """One item: frame is the 1-based Referenced Frame Number (None: a single-frame
        image, no frame number), xy N x 2 (column, row)."""
        number = b"" if frame is None else text(0x0008, 0x1160, "IS", str(int(frame)))
        ref = item(self._uids + number)
        image = item(sequence(0x0008, 0x1199, ref) + self._image_tail)
        data = np.ascontiguousarray(xy, dtype="<f4").tobytes()
        return item(self._head + sequence(0x0040, 0xA730, image)
                    + element(0x0070, 0x0022, "FL", data) + self._type)
