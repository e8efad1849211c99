"""The receiver's header read (receiver.read_header) for plain files, without pydicom.

Why: pydicom's `dcmread(stop_before_pixels, specific_tags)` costs ~0.5-0.7 ms of CPU (and
the GIL) per small instance on the lean C-STORE path, a fifth of the node's whole cost
there. The five attributes the receiver decides on sit in a flat run of elements that a
short walk reads in a few tens of microseconds.

`quick_header` answers only where its answer is pydicom's for certain, and None otherwise
(the caller then asks pydicom, which decides as before, warnings and quarantine reasons
included). It answers for a file with the 128-byte preamble and 'DICM', an explicit VR
little endian file meta, a data set in implicit VR little endian or an explicit VR little
endian syntax that is not deflated, every element up to the pixel data (or the end) of
defined length, in ascending tag order, with a VR pydicom knows (explicit), fitting in the
bytes, and the five values in printable ASCII without a backslash (one value each) and
with the VR pydicom reads them with. Everything else (a sequence of undefined length, big
endian, deflated, private or missing transfer syntax, a file cut short, a character set
escape, multi-valued or odd values, a command group in the file) is pydicom's.
"""

from __future__ import annotations

import re
import struct

# keyword -> (tag, VR pydicom reads it with)
_WANTED = {
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080060: ("Modality", "CS"),
    0x00081030: ("StudyDescription", "LO"),
    0x0020000D: ("StudyInstanceUID", "UI"),
}
KEYWORDS = ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality",
            "StudyDescription")
_PIXELS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_UNDEFINED = 0xFFFFFFFF
_DEFER = 65536  # read_header's defer_size: longer values are read differently
_ELEMENT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHL")
_LONG = struct.Struct("<L")

_vrs: tuple[frozenset[bytes], frozenset[bytes]] | None = None


def _known_vrs() -> tuple[frozenset[bytes], frozenset[bytes]]:
    """(every VR pydicom knows, those with a 32-bit length), as pydicom has them."""
    global _vrs
    if _vrs is None:
        from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

        _vrs = (frozenset(str(v).encode("ascii") for v in STANDARD_VR),
                frozenset(str(v).encode("ascii") for v in EXPLICIT_VR_LENGTH_32))
    return _vrs


_PRINTABLE = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")  # printable ASCII but the backslash


def _printable(value: bytes) -> bool:
    return _PRINTABLE.fullmatch(value) is not None


def _value(raw: bytes, vr: str) -> str | None:
    """The value as read_header returns it from pydicom, or None if unsure."""
    if vr == "UI":
        raw = raw.rstrip(b"\0 ")  # convert_UI: trailing NULs and spaces go
    if not _printable(raw):
        return None
    return raw.decode("ascii").strip()


def _explicit_head(data: bytes, pos: int, known: frozenset[bytes],
                   long_vrs: frozenset[bytes]
                   ) -> tuple[int, int, bytes, int, int] | None:
    """(group, element, VR, value length, header length) of the explicit VR little endian
    element at ``pos``, or None for a VR pydicom would have to judge or a cut-off header."""
    group, element, vr, length = _ELEMENT.unpack_from(data, pos)
    if vr not in known:
        return None
    if vr in long_vrs:
        if pos + 12 > len(data):
            return None
        return group, element, vr, _LONG.unpack_from(data, pos + 8)[0], 12
    return group, element, vr, length, 8


def _transfer_syntax(data: bytes, pos: int) -> tuple[str, int] | None:
    """The file meta's Transfer Syntax UID and where the data set starts, or None."""
    known, long_vrs = _known_vrs()
    syntax = None
    end = len(data)
    while pos + 8 <= end:
        if _ELEMENT.unpack_from(data, pos)[0] != 2:
            break
        element_head = _explicit_head(data, pos, known, long_vrs)
        if element_head is None:
            return None
        _group, element, vr, length, head = element_head
        if length == _UNDEFINED or pos + head + length > end:
            return None
        if element == 0x0010:
            if vr != b"UI":
                return None
            raw = data[pos + head:pos + head + length].rstrip(b"\0 ")
            if not _printable(raw):
                return None
            syntax = raw.decode("ascii")
        pos += head + length
    if syntax is None:
        return None
    return syntax, pos


def quick_header(data: bytes) -> dict[str, str] | None:
    """read_header's answer for a whole DICOM file held in memory, or None where only
    pydicom can say (see the module docstring)."""
    if len(data) < 132 + 8 or data[128:132] != b"DICM":
        return None
    found = _transfer_syntax(data, 132)
    if found is None:
        return None
    syntax, pos = found
    if syntax == _IMPLICIT_LE:
        implicit = True
    elif syntax in (_BIG_ENDIAN, _DEFLATED):
        return None
    else:
        from pydicom.uid import PrivateTransferSyntaxes

        if syntax in PrivateTransferSyntaxes or not syntax.startswith("1.2.840.10008.1.2."):
            return None
        implicit = False  # explicit VR little endian and every encapsulated syntax
    known, long_vrs = _known_vrs()
    end = len(data)
    if pos == end:
        return None  # no data set: pydicom's
    if pos + 8 > end:
        return None
    looks_explicit = 0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B
    if looks_explicit == implicit:
        return None  # pydicom would switch encodings (and warn)
    values: dict[str, str] = {}
    last = -1
    while pos < end:
        if pos + 8 > end:
            return None  # a few stray bytes: pydicom stops there quietly; let it
        if implicit:
            group, element, length = _IMPLICIT.unpack_from(data, pos)
            head, vr = 8, b""
        else:
            element_head = _explicit_head(data, pos, known, long_vrs)
            if element_head is None:
                return None
            group, element, vr, length, head = element_head
        tag = group << 16 | element
        if tag in _PIXELS:
            break
        if tag <= last or group in (0x0000, 0x0002, 0xFFFE):
            return None  # out of order, repeated, a command or file meta group, an item
        last = tag
        if length == _UNDEFINED or pos + head + length > end:
            return None
        wanted = _WANTED.get(tag)
        if wanted is not None:
            keyword, wanted_vr = wanted
            if (not implicit and vr != wanted_vr.encode("ascii")) or length > _DEFER:
                return None
            value = _value(data[pos + head:pos + head + length], wanted_vr)
            if value is None:
                return None
            values[keyword] = value
        pos += head + length
    return {kw: values.get(kw, "") for kw in KEYWORDS}
