"""The attention mesh's feature crops in NumPy: MediaPipe's Landmarks2TransformMatrix and
TransformTensorBilinear (v2 kernels, mediapipe/util/tflite/operations) between the two halves
of the split model (scripts/convert_models.py, split_attention).

The same arithmetic as the standard-ONNX rebuild of these ops in the one-file model
(scripts/convert_models.py: _landmarks_to_matrix, _transform_tensor), in float32: there they
are about 150 nodes and 0.7 ms of onnxruntime's time per call; here each step runs on the
three crops at once (NumPy's cost per call would otherwise be as large as the arithmetic).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Each crop: 16 x 16 samples of the 32 x 48 x 48 feature map, its box 1.5 times the box of
# its landmarks (the ops' attributes in face_landmark_with_attention.tflite).
SIZE = 16
SCALE = 1.5
# The heads model's inputs, in the order of the crops (lips, eye A 33-133, eye B 362-263).
CROP_INPUTS = ("crop_lips", "crop_eye_a", "crop_eye_b")
MATRIX_INPUTS = ("matrix_lips", "matrix_eye_a", "matrix_eye_b")
# Output pixel p samples T(p + 0.5) - 0.5; T's affine part applied to (x, y, 0, 1).
_YS, _XS = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32),
                       indexing="ij")
_GRID = np.stack([_XS.ravel() + 0.5, _YS.ravel() + 0.5], axis=1)        # (256, 2)
_HALF = np.array([SIZE / 2, SIZE / 2], np.float32)


@dataclass(frozen=True)
class CropSpec:
    """The crops' landmarks: each crop's subset (concatenated), where each subset starts, and
    the left and right landmarks whose line turns it."""

    points: np.ndarray
    starts: np.ndarray
    crop_of: np.ndarray
    left: np.ndarray
    right: np.ndarray

    @classmethod
    def of(cls, crops: Sequence[tuple[Sequence[int], int, int]]) -> CropSpec:
        sizes = [len(subset) for subset, _, _ in crops]
        return cls(np.concatenate([np.asarray(s, np.intp) for s, _, _ in crops]),
                   np.cumsum([0, *sizes[:-1]]).astype(np.intp),
                   np.repeat(np.arange(len(crops)), sizes),
                   np.array([left for _, left, _ in crops], np.intp),
                   np.array([right for _, _, right in crops], np.intp))


def matrices(xy: np.ndarray, spec: CropSpec) -> np.ndarray:
    """[N, 4, 4]: for each crop, output pixels (x, y) to feature-map coordinates; the crop
    turned by its line left -> right and sized SCALE x the box of its subset's points (xy:
    (468, 2) float32, feature-map coordinates)."""
    d = xy[spec.right] - xy[spec.left]                                  # (N, 2)
    c, s = (d / np.sqrt((d * d).sum(axis=1, keepdims=True))).T          # cos a, sin a
    rot = np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1)      # p @ rot = R(-a) p
    turned = np.einsum("pi,pij->pj", xy[spec.points], rot[spec.crop_of])
    lo = np.minimum.reduceat(turned, spec.starts)
    hi = np.maximum.reduceat(turned, spec.starts)
    centre = np.einsum("ni,nji->nj", (lo + hi) * np.float32(0.5), rot)  # @ rot.T
    linear = rot * ((hi - lo) * np.float32(SCALE / SIZE))[:, None, :]  # column j x box side j
    out = np.zeros((len(d), 4, 4), np.float32)
    out[:, :2, :2] = linear
    out[:, :2, 3] = centre - linear @ _HALF
    out[:, 2, 2] = out[:, 3, 3] = 1.0
    return out


def crops(features: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """[N, C, 16, 16]: the features (C, H, W) sampled bilinearly at each matrix's (N, 4, 4)
    image of each output pixel, zero where that falls outside them."""
    c, h, w = features.shape
    n = len(mats)
    at = (_GRID @ mats[:, :2, :2].transpose(0, 2, 1)
          + (mats[:, None, :2, 3] - np.float32(0.5))).reshape(-1, 2)    # (N*256, 2)
    limit = np.array([w - 1.0, h - 1.0], np.float32)
    inside = np.clip(at, np.float32(0.0), limit)
    keep = (inside == at).all(axis=1)
    corner = np.minimum(np.floor(inside), limit - np.float32(1.0))
    f = inside - corner
    g = np.float32(1.0) - f
    first = (corner @ np.array([1.0, w], np.float32)).astype(np.intp)
    index = first[:, None] + np.array([0, 1, w, w + 1], np.intp)       # (N*256, 4)
    weights = np.stack([g[:, 0] * g[:, 1], f[:, 0] * g[:, 1], g[:, 0] * f[:, 1],
                        f[:, 0] * f[:, 1]], axis=1)
    weights[~keep] = 0.0
    # Rows of the channel-last map: a gather of whole rows is five times faster than of
    # columns, more than the transpose costs
    rows = np.ascontiguousarray(features.reshape(c, h * w).T)
    near = np.take(rows, index, axis=0)                                 # (N*256, 4, C)
    out = np.einsum("pk,pkc->pc", weights, near).reshape(n, SIZE * SIZE, c)
    return out.transpose(0, 2, 1).reshape(n, c, SIZE, SIZE)


def head_inputs(xy: np.ndarray, features: np.ndarray, spec: CropSpec) -> dict[str, np.ndarray]:
    """The heads model's feeds: the three crops [1, C, 16, 16] of the features (C, H, W) and
    their matrices [1, 4, 4]."""
    mats = matrices(xy, spec)
    cut = crops(features, mats)
    feeds = {}
    for i, (crop_name, matrix_name) in enumerate(zip(CROP_INPUTS, MATRIX_INPUTS, strict=True)):
        feeds[crop_name] = np.ascontiguousarray(cut[i:i + 1])
        feeds[matrix_name] = mats[i:i + 1]
    return feeds
