"""Reading instances strictly (writing them atomically: dicom_deid.atomic.write_atomic).

pydicom reads a cut-off file without complaint: it stops at the last element it can
parse, or returns a value shorter than its declared length. read_instance() refuses both,
so that a truncated input is quarantined instead of being written out without its pixels.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_deid.atomic import write_atomic
from dicom_deid.errors import DeidError

_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_ITEM, _SEQ_DELIM = 0xFFFEE000, 0xFFFEE0DD
_REQUIRED = (0x00080016, 0x00080018)  # SOP Class UID, SOP Instance UID
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

__all__ = ["InputError", "check_complete", "read_instance", "write_atomic"]


class InputError(DeidError):
    """An input that is not a complete DICOM instance. The message carries no PHI."""


def _tag(t: int) -> str:
    return f"({t >> 16:04X},{t & 0xFFFF:04X})"


def read_instance(path: Path | str, *, defer_pixels: bool = False) -> Dataset:
    """Read one DICOM file completely, or raise InputError saying what is wrong with it.

    defer_pixels: leave the Pixel Data value in the file where that is safe to check without
    reading it (see _read_deferring_pixels); pydicom reads it on first access. Otherwise, and
    on any doubt, the whole file is read and checked as without it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}") from exc
    if size == 0:
        raise InputError("not DICOM: the file is empty")
    if defer_pixels:
        deferred = _read_deferring_pixels(path, size)
        if deferred is not None:
            return deferred
    try:
        ds = dcmread(path)
    except InvalidDicomError:
        # No preamble and 'DICM' prefix: accept a bare dataset only if it reads as a
        # composite instance (SOP Class and Instance UIDs), which random bytes do not.
        try:
            ds = dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 (any parser failure means: not DICOM)
            raise InputError("not DICOM: no DICM prefix and no readable dataset") from exc
        if not all(t in ds for t in _REQUIRED):
            raise InputError("not DICOM: no DICM prefix and no SOP Class/Instance UID") from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}") from exc
    except Exception as exc:  # noqa: BLE001 (pydicom raises many types on bad data)
        raise InputError(f"corrupt or truncated DICOM ({type(exc).__name__} while parsing)") from exc
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY:
        raise InputError("a DICOMDIR (Media Storage Directory index), not an instance")
    check_complete(ds, size - _strip_stray_delimiters(ds))
    return ds


def _read_deferring_pixels(path: Path, size: int) -> Dataset | None:
    """The dataset with its Pixel Data value left in the file, or None to read it whole.

    A lighter completeness check than reading the value: every element before Pixel Data is
    complete and contiguous (check_complete up to where Pixel Data starts), and Pixel Data,
    the last element, ends exactly at the end of the file (its declared length, or for an
    encapsulated value its items and sequence delimiter walked by their headers alone). Any
    other layout (elements after Pixel Data, deflate, big endian, an encoding other than the
    transfer syntax says, a DICOMDIR) and every problem go the full way, which names it.
    """
    try:
        with open(path, "rb") as fp:
            ds = dcmread(fp, stop_before_pixels=True)
            start = fp.tell()
            meta = getattr(ds, "file_meta", None)
            if meta is None:
                return None
            syntax = meta.get("TransferSyntaxUID")
            if (syntax is None or not syntax.is_transfer_syntax or syntax.is_deflated
                    or not syntax.is_little_endian
                    or str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY
                    or ds.original_encoding[0] != syntax.is_implicit_VR):
                return None
            implicit = syntax.is_implicit_VR
            head = fp.read(8 if implicit else 12)
            if len(head) < 8 or struct.unpack("<HH", head[:4]) != (0x7FE0, 0x0010):
                return None
            vr: str | None = None
            if implicit:
                (length,) = struct.unpack("<L", head[4:8])
                value_at = start + 8
            else:
                vr = head[4:6].decode("ascii", "replace")
                if vr not in ("OB", "OW") or len(head) < 12:
                    return None
                (length,) = struct.unpack("<L", head[8:12])
                value_at = start + 12
            end = _items_end(fp, value_at, size) if length == _UNDEFINED else value_at + length
    except Exception:  # noqa: BLE001 (the full read says what is wrong)
        return None
    if end != size:
        return None
    try:
        check_complete(ds, start)
    except InputError:
        return None
    ds[_PIXEL_DATA] = RawDataElement(BaseTag(_PIXEL_DATA), vr, length, None, value_at,
                                     implicit, True)
    # Where pydicom re-opens the file to read the value on first access.
    ds.filename, ds.fileobj_type = str(path), open
    return ds


def _items_end(fp, start: int, size: int) -> int | None:
    """Where an encapsulated value that starts at `start` ends (after its sequence delimiter),
    walking the item headers; None when they do not add up within the file."""
    pos = start
    while pos + 8 <= size:
        fp.seek(pos)
        group, elem, length = struct.unpack("<HHL", fp.read(8))
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            return pos + 8 if length == 0 else None
        if tag != _ITEM or length == _UNDEFINED:
            return None
        pos += 8 + length
    return None


def _strip_stray_delimiters(ds: Dataset) -> int:
    """Remove top-level item or sequence delimiters, e.g. an (FFFE,E0DD) some writers leave
    after an encapsulated Pixel Data, which pydicom reads as an element it cannot convert.
    Returns the bytes they took at the end of the file (8 each)."""
    stray = [tag for tag in ds.keys() if tag.group == 0xFFFE]  # noqa: SIM118 (no decoding)
    for tag in stray:
        del ds[tag]
    return 8 * len(stray)


def check_complete(ds: Dataset, size: int) -> None:
    """Every top-level value has its declared length and the last one ends the file."""
    last_end = None
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset decodes every element)
        raw = ds.get_item(tag)
        if type(raw) is not RawDataElement or raw.value is None:
            last_end = None
            continue
        if raw.length != _UNDEFINED:
            if len(raw.value) != raw.length:
                raise InputError(
                    f"truncated: element {_tag(int(tag))} has {len(raw.value)} of "
                    f"{raw.length} bytes"
                )
            last_end = raw.value_tell + raw.length
        else:
            last_end = raw.value_tell + len(raw.value) + 8  # + the sequence delimiter
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax == DeflatedExplicitVRLittleEndian:
        return  # positions are in the inflated stream
    if last_end is not None and last_end != size:
        if last_end < size:
            raise InputError(
                f"truncated or corrupt: {size - last_end} bytes after the last readable element"
            )
        raise InputError("truncated: the last element runs past the end of the file")
