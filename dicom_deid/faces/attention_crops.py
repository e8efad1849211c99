"""The attention mesh's feature crops in NumPy: MediaPipe's Landmarks2TransformMatrix and
TransformTensorBilinear (v2 kernels, mediapipe/util/tflite/operations) between the two halves
of the split model (scripts/convert_models.py, split_attention).

The same arithmetic as the standard-ONNX rebuild of these ops in the one-file model
(scripts/convert_models.py: _landmarks_to_matrix, _transform_tensor), in float32: there they
are about 150 nodes and 0.7 ms of onnxruntime's time per call, here three small matrix
products and one gather per crop.
"""

from __future__ import annotations

import numpy as np

# Each crop: 16 x 16 samples of the 48 x 48 x 32 feature map, its box 1.5 times the box of
# its landmarks (the ops' attributes in face_landmark_with_attention.tflite).
SIZE = 16
SCALE = 1.5
# The heads model's inputs, in the order of the crops given to head_inputs (lips, eye A
# 33-133, eye B 362-263).
CROP_INPUTS = ("crop_lips", "crop_eye_a", "crop_eye_b")
MATRIX_INPUTS = ("matrix_lips", "matrix_eye_a", "matrix_eye_b")
# Output pixel p samples T(p + 0.5) - 0.5; T's affine part applied to (x, y, 0, 1).
_YS, _XS = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32),
                       indexing="ij")
_GRID = np.stack([_XS.ravel() + 0.5, _YS.ravel() + 0.5], axis=1)        # (256, 2)
_HALF = np.array([SIZE / 2, SIZE / 2], np.float32)


def matrix(xy: np.ndarray, subset: np.ndarray, left: int, right: int) -> np.ndarray:
    """[4, 4]: output pixels (x, y) of the crop to feature-map coordinates; the crop turned by
    the line left -> right and sized SCALE x the box of the subset's points (xy: (468, 2)
    float32, feature-map coordinates)."""
    d = xy[right] - xy[left]
    c, s = d / np.float32(np.hypot(d[0], d[1]))           # cos a, sin a; the turn is -a
    rot = np.array([[c, -s], [s, c]], np.float32)           # a row vector p @ rot = R(-a) p
    turned = xy[subset] @ rot
    lo, hi = turned.min(axis=0), turned.max(axis=0)
    centre = ((lo + hi) * np.float32(0.5)) @ rot.T
    linear = rot * ((hi - lo) * np.float32(SCALE / SIZE))  # column j scaled by the box side j
    out = np.zeros((4, 4), np.float32)
    out[:2, :2] = linear
    out[:2, 3] = centre - _HALF @ linear.T
    out[2, 2] = out[3, 3] = 1.0
    return out


def crop(features: np.ndarray, m: np.ndarray) -> np.ndarray:
    """[16, 16, C]: the features (H, W, C) sampled bilinearly at m's image of each output
    pixel, zero where that falls outside them."""
    h, w = features.shape[:2]
    at = _GRID @ m[:2, :2].T + (m[:2, 3] - np.float32(0.5))          # (256, 2)
    limit = np.array([w - 1.0, h - 1.0], np.float32)
    inside = np.minimum(np.maximum(at, np.float32(0.0)), limit)
    keep = (inside == at).all(axis=1).astype(np.float32)
    corner = np.minimum(np.floor(inside), limit - np.float32(1.0))
    fx, fy = (inside - corner).T
    first = (corner[:, 1] * w + corner[:, 0]).astype(np.intp)
    index = first[:, None] + np.array([0, 1, w, w + 1], np.intp)
    gx, gy = np.float32(1.0) - fx, np.float32(1.0) - fy
    weights = np.stack([gx * gy, fx * gy, gx * fy, fx * fy], axis=1) * keep[:, None]
    near = features.reshape(h * w, -1)[index]                          # (256, 4, C)
    return np.matmul(weights[:, None, :], near).reshape(SIZE, SIZE, -1)


def head_inputs(xy: np.ndarray, features: np.ndarray,
                crops: tuple[tuple[np.ndarray, int, int], ...]) -> dict[str, np.ndarray]:
    """The heads model's feeds: the three crops [1, 16, 16, C] and matrices [1, 4, 4]; crops:
    (subset, left rotation index, right rotation index) of the lips, eye A and eye B."""
    feeds = {}
    for (subset, left, right), crop_name, matrix_name in zip(
            crops, CROP_INPUTS, MATRIX_INPUTS, strict=True):
        m = matrix(xy, subset, left, right)
        feeds[crop_name] = crop(features, m)[None]
        feeds[matrix_name] = m[None]
    return feeds
