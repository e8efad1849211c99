"""Small inputs for the keypoint tests: synthetic keypoints and a de-identified video header."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicom_deid.keypoints import FrameKeypoints

VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"


def synthetic_keypoints(frames: int, width: int = 640, height: int = 480, *, seed: int = 0,
                        missing_every: int = 3) -> list[FrameKeypoints]:
    """Random keypoints; every `missing_every`-th frame lacks its face, odd frames lack the
    right hand, and some pose points lie outside the frame (as MediaPipe reports hidden ones)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        pose = rng.uniform(0, width, (33, 3)).astype(np.float32)
        pose[-4:, 1] = height + rng.uniform(1, 50, 4)   # feet below the frame
        pose[0, 0] = -3.25                               # left of the frame
        out.append(FrameKeypoints(
            width, height,
            pose=pose,
            pose_visibility=rng.uniform(0, 1, 33),
            left_hand=rng.uniform(0, width, (21, 3)),
            right_hand=None if i % 2 else rng.uniform(0, width, (21, 3)),
            face=None if missing_every and i % missing_every == 0
            else rng.uniform(0, width, (478, 3)),
        ))
    return out


def video_header(frames: int) -> Dataset:
    """The header of a de-identified Video Photographic instance, as the pipeline gives it."""
    ds = Dataset()
    ds.SOPClassUID = VIDEO_PHOTOGRAPHIC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Anon^Patient"
    ds.PatientID = "PSEUDO-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20200102"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.ContentDate = "20200102"
    ds.ContentTime = "101600.123"
    ds.Modality = "XC"
    ds.NumberOfFrames = frames
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "dicom-deid basic profile"
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    return ds


@pytest.fixture
def header() -> Dataset:
    return video_header(12)


@pytest.fixture
def keypoints() -> list[FrameKeypoints]:
    return synthetic_keypoints(12)
