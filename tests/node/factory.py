"""Small DICOM studies with invented PHI, written for the node tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

# Invented identities: distinctive strings a grep can find anywhere they leak to.
PHI = {
    "PatientName": "Zyxwvuts^Quintessa^Phi",
    "PatientID": "PHIID-7734-XQ",
    "PatientBirthDate": "19420317",
    "AccessionNumber": "ACCPHI99812",
    "InstitutionName": "Phiville Memorial Hospital",
    "ReferringPhysicianName": "Qwertyuiop^Referrer",
    "StudyDescription": "VIDEO EXAM OF ZYXWVUTS",
}


@dataclass(frozen=True)
class Study:
    study_uid: str
    files: list[Path]
    sop_uids: list[str]


def make_instance(study_uid: str, series_uid: str, sop_uid: str, number: int,
                  rows: int = 16, columns: int = 16, modality: str = "OT",
                  phi: dict[str, str] | None = None) -> Dataset:
    phi = PHI if phi is None else phi
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.ConversionType = "WSD"
    ds.StudyDate = "20240105"
    ds.StudyTime = "101500"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.StudyID = "1"
    for keyword, value in phi.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) * (number + 1) % 251).astype(
        np.uint8).tobytes()
    return ds


def write_study(folder: Path, instances: int, study_uid: str | None = None,
                modality: str = "OT", size: int = 16) -> Study:
    """A study of `instances` single-frame images in one series, one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    files, sops = [], []
    for n in range(instances):
        sop = generate_uid()
        ds = make_instance(study_uid, series_uid, sop, n + 1, rows=size, columns=size,
                           modality=modality)
        path = folder / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(sop)
    return Study(study_uid, files, sops)
