"""keypoints stage: body pose, hands and face mesh per frame, their invariance under face
replacement, and their record as a DICOM Comprehensive SR and a tidy CSV (docs/CONTRACTS.md).

Importing this package is light; MediaPipe loads when a KeypointExtractor is built and
highdicom when an SR is built or read.
"""

from dicom_deid.keypoints.extractor import KeypointExtractor
from dicom_deid.keypoints.metrics import InvarianceMetrics, face_nme, invariance
from dicom_deid.keypoints.points import FACE_CONTOUR_POINTS, SETS, FrameKeypoints, point_names
from dicom_deid.keypoints.sr import KeypointSRError, build_keypoint_sr, read_keypoint_sr
from dicom_deid.keypoints.tables import write_keypoints_csv

__all__ = [
    "FACE_CONTOUR_POINTS",
    "SETS",
    "FrameKeypoints",
    "InvarianceMetrics",
    "KeypointExtractor",
    "KeypointSRError",
    "build_keypoint_sr",
    "face_nme",
    "invariance",
    "point_names",
    "read_keypoint_sr",
    "write_keypoints_csv",
]
