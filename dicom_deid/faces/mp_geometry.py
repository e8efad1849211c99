"""MediaPipe's pre- and post-processing for its detector and landmark models, in NumPy.

The same steps, in the same order and with the same constants, as the MediaPipe 0.10.21
calculators the legacy face solutions run (SsdAnchors, TensorsToDetections,
NonMaxSuppression WEIGHTED, DetectionsToRects, RectTransformation, ImageToTensor,
LandmarkProjection), so that the ONNX models given the same tensors give the same points.

Coordinates follow MediaPipe: a Rect is normalised by the image size (centre, size) with a
rotation in radians, clockwise in image coordinates (y down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Rect:
    """A rotated rectangle, normalised by the image's width and height."""

    x: float
    y: float
    w: float
    h: float
    rotation: float = 0.0


@dataclass(frozen=True)
class Detections:
    """Detector output after NMS, best first: boxes (N, 4) xmin, ymin, xmax, ymax and
    keypoints (N, K, 2) normalised by the image, scores (N,)."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def ssd_anchor_centres(size: int, strides: tuple[int, ...],
                       per_cell: tuple[int, ...]) -> np.ndarray:
    """(N, 2) anchor centres of SsdAnchorsCalculator with fixed_anchor_size (w = h = 1).

    Consecutive layers of one stride are merged into one grid with their anchors side by
    side; per_cell gives each merged grid's anchors per cell (2 per layer with
    interpolated_scale_aspect_ratio 1, 1 with it 0).
    """
    out = []
    for stride, count in zip(strides, per_cell, strict=True):
        cells = math.ceil(size / stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells,
                             indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, count, axis=0))
    return np.concatenate(out).astype(np.float32)


def decode(raw: np.ndarray, logits: np.ndarray, anchors: np.ndarray, scale: float,
           min_score: float, keypoints: int) -> Detections:
    """TensorsToDetectionsCalculator (reverse_output_order, sigmoid, clipping at 100)."""
    raw = raw.reshape(len(anchors), -1)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
    keep = np.nonzero(scores >= min_score)[0]
    raw, a, scores = raw[keep], anchors[keep], scores[keep]
    centre = raw[:, 0:2] / scale + a
    half = raw[:, 2:4] / scale / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = raw[:, 4:4 + 2 * keypoints].reshape(-1, keypoints, 2) / scale + a[:, None, :]
    return Detections(boxes, kps, scores)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(dets: Detections, threshold: float = 0.3) -> Detections:
    """NonMaxSuppressionCalculator, WEIGHTED, IoU: each kept detection is the score-weighted
    mean of those overlapping it by more than `threshold`, with the best one's score."""
    order = np.argsort(-dets.scores, kind="stable")
    remaining = order
    boxes, kps, scores = [], [], []
    while len(remaining):
        best = remaining[0]
        overlap = _iou(dets.boxes[best], dets.boxes[remaining]) > threshold
        members = remaining[overlap]
        w = dets.scores[members][:, None]
        total = float(w.sum())
        boxes.append((dets.boxes[members] * w).sum(axis=0) / total)
        kps.append((dets.keypoints[members] * w[:, :, None]).sum(axis=0) / total)
        scores.append(dets.scores[best])
        remaining = remaining[~overlap]
    if not scores:
        return Detections(np.zeros((0, 4), np.float32), dets.keypoints[:0], dets.scores[:0])
    return Detections(np.array(boxes), np.array(kps), np.array(scores))


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation(start: np.ndarray, end: np.ndarray, width: int, height: int,
             target: float = 0.0) -> float:
    """DetectionsToRectsCalculator's rotation: the start->end vector turned to `target`."""
    dx = (float(end[0]) - float(start[0])) * width
    dy = (float(end[1]) - float(start[1])) * height
    return normalize_radians(target - math.atan2(-dy, dx))


def box_rect(box: np.ndarray, start: np.ndarray, end: np.ndarray, width: int,
             height: int) -> Rect:
    """A normalised box (xmin, ymin, xmax, ymax) as a Rect turned by start->end."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return Rect((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0,
                rotation(start, end, width, height))


def points_rect(points: np.ndarray, start: int, end: int, width: int, height: int) -> Rect:
    """LandmarksToDetection + DetectionsToRects: the points' bounding box, turned by the
    vector from points[start] to points[end]."""
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return box_rect(np.concatenate([lo, hi]), points[start], points[end], width, height)


def expand(rect: Rect, width: int, height: int, scale: float) -> Rect:
    """RectTransformationCalculator with square_long and no shift."""
    long_side = max(rect.w * width, rect.h * height)
    return Rect(rect.x, rect.y, long_side / width * scale, long_side / height * scale,
                rect.rotation)


def letterbox_rect(width: int, height: int) -> Rect:
    """The whole image padded to a square (ImageToTensor's keep_aspect_ratio)."""
    side = max(width, height)
    return Rect(0.5, 0.5, side / width, side / height)


def crop(rgb: np.ndarray, rect: Rect, size: int, *, flip: bool = False,
         zero_border: bool = False, exact: bool = False) -> np.ndarray:
    """ImageToTensorCalculator on CPU: the rotated rect warped to size x size RGB (uint8).

    The rect's corners map onto the tensor's corners (bilinear); outside the image the
    border is replicated, or zero with zero_border (the detectors' letterbox). flip mirrors
    the result left-right (the iris model on the right eye).

    exact: as MediaPipe's OpenCV converter does it (the rect in float32 pixels, cv2.boxPoints
    of it, a perspective transform onto the tensor's corners, warpPerspective), the same
    pixels. Otherwise warpAffine, about 0.1 ms faster per crop, which rounds its sample
    positions differently: a pixel in a few hundred differs by one level. The pose tracker
    takes the exact warp (given MediaPipe's region, its points agree to 0.0003 % of the body
    instead of 0.025 %, and its next region to 0.006 px instead of 0.9 px; its crop costs
    little beside the 18 ms model); the face models, whose mesh is a speed target and agrees
    to 0.012 % of the inter-ocular distance with warpAffine, keep the faster one.
    """
    h, w = rgb.shape[:2]
    border = cv2.BORDER_CONSTANT if zero_border else cv2.BORDER_REPLICATE
    if exact:
        box = cv2.RotatedRect((float(np.float32(rect.x * w)), float(np.float32(rect.y * h))),
                              (float(np.float32(rect.w * w)), float(np.float32(rect.h * h))),
                              float(np.float32(rect.rotation * 180.0 / math.pi)))
        src = cv2.boxPoints(box).astype(np.float32)  # bottom-left, top-left, top-right, ...
        d = float(size)
        to = [[d, d], [d, 0], [0, 0], [0, d]] if flip else [[0, d], [0, 0], [d, 0], [d, d]]
        matrix = cv2.getPerspectiveTransform(src, np.array(to, dtype=np.float32))
        return cv2.warpPerspective(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=border, borderValue=(0, 0, 0))
    cx, cy = rect.x * w, rect.y * h
    rw, rh = rect.w * w, rect.h * h
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    ux, uy = np.array([c, s]) * rw, np.array([-s, c]) * rh   # the rect's x and y axes
    top_left = np.array([cx, cy]) - ux / 2 - uy / 2
    corners = [top_left + ux, top_left, top_left + ux + uy] if flip else \
        [top_left, top_left + ux, top_left + uy]
    src = np.array(corners, dtype=np.float32)
    dst = np.array([[0, 0], [size, 0], [0, size]], dtype=np.float32)
    affine = cv2.getAffineTransform(src, dst)
    return cv2.warpAffine(rgb, affine, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=border, borderValue=(0, 0, 0))


def project(points: np.ndarray, rect: Rect) -> np.ndarray:
    """LandmarkProjectionCalculator: points normalised in the rect -> normalised in the image
    (z scaled by the rect's width, as x)."""
    x = points[:, 0] - 0.5
    y = points[:, 1] - 0.5
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    out = np.empty_like(points, dtype=np.float64)
    out[:, 0] = (c * x - s * y) * rect.w + rect.x
    out[:, 1] = (s * x + c * y) * rect.h + rect.y
    out[:, 2] = points[:, 2] * rect.w
    return out


def project_box(dets: Detections, rect: Rect) -> Detections:
    """Detections found in a (non-rotated) rect's tensor, in the image's coordinates."""
    scale = np.array([rect.w, rect.h])
    origin = np.array([rect.x, rect.y]) - scale / 2
    boxes = dets.boxes.reshape(-1, 2, 2) * scale + origin
    kps = dets.keypoints * scale + origin
    return Detections(boxes.reshape(-1, 4), kps, dets.scores)


def image_tensor(rgb: np.ndarray, lo: float, hi: float, *,
                 channels_first: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """A batch of one float32 NHWC tensor, 0..255 mapped to lo..hi (MediaPipe's ImageToTensor).

    channels_first: NCHW instead, the same values (for a model whose input takes it).
    out: a float32 array of the tensor's shape to write it into (a caller that makes one per
    frame keeps one: a fresh 442 kB tensor cost the attention mesh's run about 0.3 ms more
    than a reused one, benchmarks/mesh_routes.py's measurement of i21mesh6).
    """
    if channels_first:
        # cv2.split writes each plane contiguously: as cheap as the NHWC cast below, where a
        # NumPy transpose-and-cast costs twice that (strided reads)
        shape = (1, rgb.shape[2], *rgb.shape[:2])
        x = np.empty(shape, np.float32) if out is None else out
        for i, plane in enumerate(cv2.split(rgb)):
            x[0, i] = plane
    elif out is not None:
        x = out
        x[0] = rgb
    else:
        x = rgb.astype(np.float32)[None]
    x *= (hi - lo) / 255.0
    x += lo
    return x
