"""Reading instances strictly (writing them atomically: dicom_deid.atomic.write_atomic).

pydicom reads a cut-off file without complaint: it stops at the last element it can
parse, or returns a value shorter than its declared length. read_instance() refuses both,
so that a truncated input is quarantined instead of being written out without its pixels.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_deid.atomic import write_atomic
from dicom_deid.errors import DeidError

_UNDEFINED = 0xFFFFFFFF
_REQUIRED = (0x00080016, 0x00080018)  # SOP Class UID, SOP Instance UID
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

__all__ = ["InputError", "check_complete", "read_instance", "write_atomic"]


class InputError(DeidError):
    """An input that is not a complete DICOM instance. The message carries no PHI."""


def _tag(t: int) -> str:
    return f"({t >> 16:04X},{t & 0xFFFF:04X})"


def read_instance(path: Path | str) -> Dataset:
    """Read one DICOM file completely, or raise InputError saying what is wrong with it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}") from exc
    if size == 0:
        raise InputError("not DICOM: the file is empty")
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
