"""Synthetic instances in which every attribute of the Annex E table carries an identifying
value (invented), for the header tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dicom_deid.header.table import TableRow, load_table

# An SOP Class no IOD table knows: every compound action resolves to its keep-present
# choice, so the expected action follows from the table alone.
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.9.7433.1.1"
PRIVATE_CREATOR = "PHI TEST CREATOR"
NESTED_PERSON = 0x0040A123  # Person Name, D in the table: the probe put inside sequences


@dataclass
class Injected:
    """What was put where: row tag -> injected value, and the identifying strings."""

    values: dict[int, object] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)     # strings that must not survive
    uids: list[str] = field(default_factory=list)       # original UIDs that must not survive


def token(index: int, level: int) -> str:
    """An 8-character identifying string, unique per row and level, valid for CS and SH."""
    return f"PHI{index:04d}{'ABCDEFGH'[level]}"


def _date(index: int) -> date:
    return date(1951, 3, 1) + timedelta(days=index * 3)


def value_for(row: TableRow, index: int, level: int, injected: Injected) -> object | None:
    vr = row.vr
    tok = token(index, level)
    when = _date(index)
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE"):
        injected.tokens.append(tok)
        return tok
    if vr == "PN":
        injected.tokens.append(tok)
        return f"{tok}^Jane"
    if vr == "DA":
        return when.strftime("%Y%m%d")
    if vr == "DT":
        return when.strftime("%Y%m%d") + "101112.123456"
    if vr == "TM":
        return f"10{index % 60:02d}11.{index:06d}"
    if vr == "UI":
        uid = f"1.2.826.0.1.3680043.9.7433.{index}.{level}"
        injected.uids.append(uid)
        return uid
    if vr == "AS":
        return "061Y"
    if vr == "UR":
        injected.tokens.append(tok)
        return f"http://{tok.lower()}.example/"
    if vr in ("DS", "IS"):
        return str(index + 7)
    if vr in ("US",):
        return 3
    if vr in ("OB", "UN"):
        injected.tokens.append(tok)
        return tok.encode()
    return None


def _person_item(index: int, level: int, injected: Injected) -> Dataset:
    item = Dataset()
    tok = token(index, level + 1)
    injected.tokens.append(tok)
    item.add_new(NESTED_PERSON, "PN", f"{tok}^Nested")
    return item


def add_rows(ds: Dataset, level: int, injected: Injected, rows=None) -> None:
    """Every exact-tag row of the table into ds, each with its own identifying value."""
    for index, row in enumerate(rows or load_table().rows):
        tag = row.exact_tag
        if tag is None or tag >> 16 in (0x0000, 0x0002):
            continue  # command and file meta elements cannot live in a dataset
        if row.vr == "SQ":
            ds.add_new(tag, "SQ", Sequence([_person_item(index, level, injected)]))
            injected.values[tag] = "SQ"
            continue
        value = value_for(row, index, level, injected)
        if value is None:
            continue
        ds.add_new(tag, row.vr, value)
        injected.values[tag] = value


def add_groups(ds: Dataset, injected: Injected) -> None:
    """The wildcard rows: a curve, an overlay plane, and private attributes."""
    for text in ("PHICURVE", "PHIOVLAY", "PHIOCMNT", "PHIPRIV1", "PHIPRIV2"):
        injected.tokens.append(text)
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50003000, "OB", b"PHICURVE")
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"PHIOVLAY")
    ds.add_new(0x60004000, "LT", "PHIOCMNT")
    ds.add_new(0x00090010, "LO", PRIVATE_CREATOR)
    ds.add_new(0x00091001, "LO", "PHIPRIV1")
    ds.add_new(0x00091002, "SQ", Sequence([Dataset()]))
    ds[0x00091002].value[0].add_new(0x00100010, "PN", "PHIPRIV2^Jane")


def base_instance(sop_class: str = UNKNOWN_SOP_CLASS, patient_id: str = "PHI-MRN-0001") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7433.900.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.7433.900.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.9.7433.900.3"
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    ds.Modality = "OT"
    return ds


def every_row_instance(sop_class: str = UNKNOWN_SOP_CLASS) -> tuple[Dataset, Injected]:
    injected = Injected()
    ds = base_instance(sop_class)
    add_rows(ds, 0, injected)
    add_groups(ds, injected)
    # the instance's own identity stays in place (its rows are overwritten above)
    ds.SOPClassUID = sop_class
    ds.PatientID = "PHI-MRN-0001"
    ds.PatientName = "Doe^Jane"
    injected.tokens += ["PHI-MRN-0001", "Doe^Jane"]
    return ds, injected


def nested_instance(depth: int = 3) -> tuple[Dataset, Injected, tuple[int, ...]]:
    """Every row at `depth` levels down, inside sequences the table does not list."""
    injected = Injected()
    ds = base_instance()
    chain = (0x00081115, 0x0008114A, 0x00081199, 0x00081198)[:depth]  # unlisted sequences
    holder = ds
    for tag in chain:
        item = Dataset()
        holder.add_new(tag, "SQ", Sequence([item]))
        holder = item
    add_rows(holder, min(depth, 6), injected)
    return ds, injected, chain


def with_file_meta(ds: Dataset) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def write(ds: Dataset, path: Path) -> Path:
    with_file_meta(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
