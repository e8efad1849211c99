"""dlib's face recogniser (ResNet, 128-d descriptors) as the tests' independent judge.

Same model as the evaluation (EVALUATION.md): a distance under 0.6 is a match.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

MATCH_DISTANCE = 0.6


@functools.lru_cache(maxsize=1)
def _models():
    dlib = pytest.importorskip("dlib", reason="dlib-bin (eval extra) is not installed")
    frm = pytest.importorskip("face_recognition_models",
                              reason="face_recognition_models (eval extra) is not installed")
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(frm.pose_predictor_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


def faces(rgb: np.ndarray, upsample: int = 1) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """(box x0, y0, x1, y1; descriptor) of every face dlib's HOG detector finds."""
    detector, predictor, recogniser = _models()
    rgb = np.ascontiguousarray(rgb)
    return [
        ((r.left(), r.top(), r.right(), r.bottom()),
         np.array(recogniser.compute_face_descriptor(rgb, predictor(rgb, r))))
        for r in detector(rgb, upsample)
    ]


def descriptors(rgb: np.ndarray, upsample: int = 1) -> list[np.ndarray]:
    return [d for _, d in faces(rgb, upsample)]


def descriptor_at(rgb: np.ndarray, point: tuple[float, float], upsample: int = 1) -> np.ndarray:
    """Descriptor of the face whose box holds point (fails the test when there is none)."""
    for (x0, y0, x1, y1), d in faces(rgb, upsample):
        if x0 <= point[0] <= x1 and y0 <= point[1] <= y1:
            return d
    raise AssertionError(f"dlib finds no face at {point}")


def best_distance(rgb: np.ndarray, reference: np.ndarray, upsample: int = 1) -> float:
    """Smallest descriptor distance of any face in rgb to reference (inf when none found)."""
    found = descriptors(rgb, upsample)
    if not found:
        return float("inf")
    return min(float(np.linalg.norm(d - reference)) for d in found)
