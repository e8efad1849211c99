"""node/quick_header.py answers exactly as pydicom's read_header, or not at all."""

from __future__ import annotations

import struct
import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from dicom_deid.node.quick_header import quick_header
from dicom_deid.node.receiver import read_header

PYDICOM_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))


def pydicom_answer(data: bytes) -> dict[str, str] | str:
    """What read_header gets from pydicom alone, or 'raises'."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return read_header(BytesIO(data))
        except Exception:
            return "raises"


def instance(syntax: str = ExplicitVRLittleEndian, **attrs) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.Modality, ds.StudyDescription = "Quick^Test", "CT", "HEAD W/O "
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = 16
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if syntax == JPEGBaseline8Bit:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 30])
    else:
        ds.PixelData = b"\0" * 32
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=True)
    return out.getvalue()


def check(data: bytes) -> dict[str, str] | None:
    quick = quick_header(data)
    if quick is not None:
        assert quick == pydicom_answer(data)
    return quick


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    JPEGBaseline8Bit])
def test_plain_instances_are_read_without_pydicom_and_the_same(syntax):
    data = instance(syntax)
    quick = check(data)
    assert quick is not None and quick["Modality"] == "CT"
    assert quick["StudyDescription"] == "HEAD W/O"


def test_the_benchmark_and_storescu_shape_is_taken():
    """As the lean path holds it: pynetdicom's file meta, then the data set as sent."""
    from dicom_deid.node.fast_store import file_preamble

    data = instance()
    ds = pydicom.dcmread(BytesIO(data))
    raw = data[144 + struct.unpack_from("<L", data, 140)[0]:]  # the data set, as sent
    held = file_preamble(CTImageStorage, str(ds.SOPInstanceUID), ExplicitVRLittleEndian) + raw
    assert check(held) is not None


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: p.name)
def test_pydicoms_own_test_files_get_pydicoms_answer_or_none(path):
    check(path.read_bytes())


def test_it_answers_for_a_good_share_of_pydicoms_test_files():
    answered = [p.name for p in PYDICOM_FILES if check(p.read_bytes()) is not None]
    assert len(answered) >= 10, answered


def test_every_truncation_gets_pydicoms_answer_or_none():
    data = instance(StudyDescription="CUT HERE")
    for cut in range(0, len(data), 3):
        check(data[:cut])


@pytest.mark.parametrize("attrs", [
    {"Modality": "CT\\MR"},  # two values
    {"StudyDescription": "Sch\u00e4del"},  # not ASCII
    {"StudyDescription": None, "SpecificCharacterSet": "ISO 2022 IR 87"},
    {"StudyInstanceUID": None},
    {"StudyInstanceUID": ""},
    {"ReferencedImageSequence": Sequence([Dataset()])},
])
def test_odd_values_are_pydicoms(attrs):
    data = instance(**attrs)
    quick = check(data)
    if "Modality" in attrs or "StudyDescription" in attrs and attrs["StudyDescription"]:
        assert quick is None
    if attrs.get("StudyInstanceUID", "x") in (None, ""):
        assert quick is not None and quick["StudyInstanceUID"] == ""


def _patch(data: bytes, tag: int, new_vr: bytes) -> bytes:
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    at = data.index(needle, 132 + 4)
    return data[:at + 4] + new_vr + data[at + 6:]


def test_a_wrong_vr_an_unknown_vr_or_disorder_are_pydicoms():
    data = instance()
    assert check(_patch(data, 0x00080060, b"LO")) is None
    assert check(_patch(data, 0x00080060, b"ZZ")) is None
    a = data.index(struct.pack("<HH", 0x0008, 0x0016), 132 + 4)
    b = data.index(struct.pack("<HH", 0x0008, 0x0018), 132 + 4)
    swapped = data[:a] + data[b:b + (b - a)] + data[a:b] + data[b + (b - a):]
    check(swapped)


def test_undefined_length_sequences_and_big_endian_are_pydicoms():
    for name in ("ExplVR_BigEnd.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm",
                 "UN_sequence.dcm", "nested_priv_SQ.dcm", "no_meta.dcm"):
        path = PYDICOM_FILES[0].parent / name
        assert quick_header(path.read_bytes()) is None, name


def test_read_header_uses_it_only_when_given_the_bytes(monkeypatch):
    import dicom_deid.node.receiver as receiver

    calls = []
    monkeypatch.setattr(receiver, "quick_header", lambda data: calls.append(1) or None)
    data = instance()
    assert read_header(BytesIO(data), data) == pydicom_answer(data)  # fell back
    assert calls == [1]
