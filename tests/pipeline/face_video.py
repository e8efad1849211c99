"""A DICOM video with a real face, made on the fly: skimage's astronaut (public domain) moving
across the frame, H.264 in a Video Photographic header with invented identifiers."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.uid import MPEG4HP41

from tests.faces import synth
from tests.video.fixtures import VIDEO_PHOTOGRAPHIC, base_header, encapsulate_stream, encode_stream

# Invented identity in the header; the tests check none of it comes out.
PHI = {
    "PatientName": "ASTRONAUT^EILEEN^TEST",
    "PatientID": "FACE-MRN-0042",
    "PatientBirthDate": "19560106",
    "AccessionNumber": "FACEACC77",
    "InstitutionName": "Invented Space Clinic",
}


def make_face_video(path: Path, frames: int = 10, size: tuple[int, int] = (320, 320),
                    motion: str = "translate", study_uid: str | None = None) -> tuple[Path, list]:
    """Write the video; returns (path, the RGB frames that went into the encoder).

    study_uid: fixed instead of a fresh one; the swap's donor is keyed by the study, so a
    fixed UID (with the test key) makes the donor, and the test, deterministic."""
    pictures, _ = synth.sequence(frames, motion, size)
    data = encode_stream(pictures, "libx264", "h264", Fraction(25), bframes=2)
    width, height = size
    ds = base_header(VIDEO_PHOTOGRAPHIC, height, width, frames, 40.0)
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_14496_10"
    ds.PixelData = encapsulate_stream([data])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = MPEG4HP41
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path, pictures
