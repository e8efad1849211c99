#!/usr/bin/env python
"""Build tests/data/sample: a tiny study with INVENTED identifying data.

    .venv/bin/python tests/data/make_sample.py

Every name, identifier, date, address and UID in it is made up for the quick start
(`dicom-deid deidentify tests/data/sample --output out`) and the tests. Two CT series
of two 16x16 slices each, and a Basic Text SR that references the slices; the headers
carry patient, physician, institution and device identity, private tags, and references
nested in sequences. The output is deterministic, so re-running the script changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

BasicTextSRStorage = "1.2.840.10008.5.1.4.1.1.88.11"
OUT = Path(__file__).resolve().parent / "sample"


def uid(name: str) -> str:
    """A fixed, invented UID (2.25 form) for a name."""
    return "2.25." + str(int.from_bytes(hashlib.sha256(name.encode()).digest()[:15], "big"))


STUDY = uid("sample-study")
FRAME = uid("sample-frame-of-reference")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _patient_and_study(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Doe^Jane^Quinn"
    ds.PatientID = "SAMPLE-MRN-4711"
    ds.IssuerOfPatientID = "Sample General Hospital"
    ds.PatientBirthDate = "19670412"
    ds.PatientSex = "F"
    ds.PatientAge = "056Y"
    ds.PatientWeight = "61"
    ds.PatientAddress = "12 Invented Street, Nowhere Town"
    ds.PatientTelephoneNumbers = "+44 1632 960999"
    ds.OtherPatientIDs = "NHS-999-000-4711"
    ds.PatientComments = "Jane Doe, allergic to penicillin"
    ds.StudyInstanceUID = STUDY
    ds.StudyDate = "20230914"
    ds.StudyTime = "093015"
    ds.StudyID = "STUDY-0815"
    ds.AccessionNumber = "ACC-20230914-77"
    ds.StudyDescription = "CT head without contrast for Jane Doe"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.InstitutionName = "Sample General Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Nowhere Town"
    ds.StationName = "CT-SAMPLE-01"
    ds.Manufacturer = "Invented Scanners"
    ds.ManufacturerModelName = "Sample CT 3000"
    ds.DeviceSerialNumber = "SN-0042-0815"
    ds.OperatorsName = "Tech^Robin"
    ds.PerformingPhysicianName = "Quinn^Michaela"
    ds.RequestAttributesSequence = Sequence([Dataset()])
    request = ds.RequestAttributesSequence[0]
    request.RequestedProcedureID = "RP-0815"
    request.ScheduledProcedureStepID = "SPS-0815"
    request.ReasonForTheRequestedProcedure = "headache since fall at 12 Invented Street"


def _image(series: int, number: int) -> Dataset:
    ds = Dataset()
    _patient_and_study(ds)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(f"sample-ct-{series}-{number}")
    ds.SeriesInstanceUID = uid(f"sample-series-{series}")
    ds.FrameOfReferenceUID = FRAME
    ds.Modality = "CT"
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.SeriesDate, ds.SeriesTime = "20230914", f"09{30 + series:02d}00"
    ds.AcquisitionDate, ds.AcquisitionTime = "20230914", f"09{30 + series:02d}{number:02d}"
    ds.ContentDate, ds.ContentTime = "20230914", f"09{30 + series:02d}{number:02d}"
    ds.SeriesDescription = ["AX HEAD", "AX HEAD BONE"][series - 1] + " (Doe)"
    ds.ProtocolName = "HEAD ROUTINE Dr House"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "HEAD"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.ImagePositionPatient = [0, 0, 5 * number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = "5"
    ds.AcquisitionNumber = 1
    ds.PositionReferenceIndicator = ""
    ds.PixelSpacing = [0.5, 0.5]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    yy, xx = np.mgrid[0:16, 0:16]
    ds.PixelData = ((xx * 50 + yy * 20 + number * 100) % 4096).astype("<u2").tobytes()
    if number == 2:  # a reference to the slice before, nested in a sequence
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = uid(f"sample-ct-{series}-1")
        ref.PurposeOfReferenceCodeSequence = Sequence([_code("121311", "DCM", "Localizer")])
        ds.ReferencedImageSequence = Sequence([ref])
        ds.SourceImageSequence = Sequence([ref])
    # private tags: a creator and values that repeat identifying data
    ds.add_new(0x00090010, "LO", "SAMPLE PRIVATE")
    ds.add_new(0x00091001, "LO", "Doe^Jane scanned by Tech^Robin")
    ds.add_new(0x00091002, "DA", "19670412")
    return ds


def _report(images: list[Dataset]) -> Dataset:
    ds = Dataset()
    _patient_and_study(ds)
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = uid("sample-sr")
    ds.SeriesInstanceUID = uid("sample-series-sr")
    ds.Modality = "SR"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20230915", "101500"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = "House^Gregory"
    observer.VerifyingOrganization = "Sample General Hospital"
    observer.VerificationDateTime = "20230915101500"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence([])
    ds.VerifyingObserverSequence = Sequence([observer])
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    text.TextValue = "No bleed. Patient Jane Doe (MRN SAMPLE-MRN-4711) seen by Dr House."
    image = Dataset()
    image.RelationshipType = "INFERRED FROM"
    image.ValueType = "IMAGE"
    image.ConceptNameCodeSequence = Sequence([_code("121080", "DCM", "Best illustration of finding")])
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = images[0].SOPInstanceUID
    image.ReferencedSOPSequence = Sequence([ref])
    text.ContentSequence = Sequence([image])
    ds.ContentSequence = Sequence([text])
    evidence_series: dict[str, list[Dataset]] = {}
    for img in images:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = img.SOPClassUID, img.SOPInstanceUID
        evidence_series.setdefault(img.SeriesInstanceUID, []).append(item)
    study = Dataset()
    study.StudyInstanceUID = STUDY
    study.ReferencedSeriesSequence = Sequence()
    for series_uid, items in evidence_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = Sequence(items)
        study.ReferencedSeriesSequence.append(series)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.PerformedProcedureCodeSequence = Sequence([])
    return ds


def write(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def build() -> list[Dataset]:
    images = [_image(s, n) for s in (1, 2) for n in (1, 2)]
    return images + [_report(images)]


def main() -> None:
    for ds in build():
        name = f"{ds.Modality}-{int(ds.SeriesNumber):02d}-{int(ds.InstanceNumber):02d}.dcm"
        write(ds, OUT / name)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
