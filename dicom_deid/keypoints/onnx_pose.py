"""`OnnxPose`: MediaPipe's body pose (pose_landmark_full) on ONNX Runtime, in tracking mode.

The models are MediaPipe 0.10.21's own (pose_detection, pose_landmark_full), converted by
scripts/convert_models.py --body (models/mp_pose_*.onnx). The steps around them are those of
`mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1)`:

- detection: the whole frame letterboxed to 224 x 224 (values -1..1), 2254 SSD anchors,
  scores through a sigmoid, weighted NMS; only the best detection is followed.
- region: AlignmentPointsRects from the detection's keypoints 0 (hip centre) and 1 (a point
  above the head): centre at keypoint 0, side twice their distance, turned so that the
  vector points up, then scaled by 1.25 (square_long).
- landmarks: the region warped to 256 x 256 (0..1); 39 points of 5 values (x, y, z,
  visibility, presence logits), refined by the 64 x 64 heatmap (9 x 9 window around each
  point, sigmoid weights, kept where the window's best weight is >= 0.5), projected back.
  A pose flag below min_tracking_confidence drops the pose (the detector runs again).
- tracking: the next frame's region comes from this frame's auxiliary points 33-34 the same
  way the detection's keypoints give it (scaled by 1.25 too).
- smoothing (smooth=True, as Pose(smooth_landmarks=True)): visibility low-pass (alpha 0.1);
  one-euro filters on the points in pixels, value-scaled by 1 / the side of the unscaled
  region of the auxiliary points (points: min_cutoff 0.05, beta 80; derivative cutoff 1),
  at MediaPipe's simulated 30 fps clock. The auxiliary points are always filtered
  (min_cutoff 0.01, beta 10), whatever smooth says, and give the next region, as in
  MediaPipe's graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dicom_deid.faces import mp_geometry as geo
from dicom_deid.onnx_device import BundledModel

POSE_DETECTION = "mp_pose_detection.onnx"
POSE_LANDMARK = "mp_pose_landmark_full.onnx"
MODEL_FILES = (POSE_DETECTION, POSE_LANDMARK)
POSE_POINTS = 33
_MODEL_POINTS = 39
_DETECTOR_SIZE = 224
_LANDMARK_SIZE = 256
_ANCHORS = geo.ssd_anchor_centres(_DETECTOR_SIZE, (8, 16, 32), (2, 2, 6))
# RectTransformation's scale of the region: from a detection (pose_detection_to_roi) and
# from the previous frame's points (pose_landmarks_to_roi).
_DETECTION_SCALE = 1.25
_TRACKING_SCALE = 1.25
_HEATMAP_KERNEL = 9
_HEATMAP_MIN_CONFIDENCE = 0.5
# MediaPipe's Python solutions stamp video frames 33333 us apart whatever the real rate.
_FRAME_SECONDS = 33333e-6
# A crop with nothing in it (a uniform frame after a tracked pose) gives a pose flag of
# 0.50001 (logit 3.9e-5, the TFLite interpreter gives the same), which MediaPipe's Pose
# rejects and a plain 0.5 threshold would keep as a phantom pose for as long as the frames
# stay empty; a flag must clear the threshold by this margin (real poses: 0.7 and more).
_FLAG_MARGIN = 1e-4
# Idle threads wait instead of two of them fighting over a busy CPU (see faces/onnx_models.py).
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class PoseResult:
    """One frame's pose: landmarks (33, 3) normalised by the image (z by its width, as x),
    visibility and presence (33,) in 0..1."""

    landmarks: np.ndarray
    visibility: np.ndarray
    presence: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def alignment_rect(start: np.ndarray, end: np.ndarray, width: int, height: int,
                   scale: float) -> geo.Rect:
    """AlignmentPointsRectsCalculator (target angle 90 degrees), then RectTransformation
    (scale, square_long): the pose region from two normalised points."""
    sx, sy = float(start[0]) * width, float(start[1]) * height
    ex, ey = float(end[0]) * width, float(end[1]) * height
    side = 2.0 * math.hypot(ex - sx, ey - sy)
    rect = geo.Rect(sx / width, sy / height, side / width, side / height,
                    geo.rotation(start, end, width, height, math.pi / 2))
    return geo.expand(rect, width, height, scale)


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RefineLandmarksFromHeatmapCalculator: points (N, >=2) normalised in the crop, heatmap
    (H, W, N) logits; x, y replaced by the sigmoid-weighted mean of the 9 x 9 cells around
    each point where the best of them is >= 0.5 (MediaPipe's pose graph sets kernel_size 9: with 7 the points are up to 1 % of the body off)."""
    out = points.copy()
    hm_h, hm_w, count = heatmap.shape
    half = (_HEATMAP_KERNEL - 1) // 2
    # C++ float -> int truncation (towards zero), as MediaPipe's.
    cols = np.trunc(points[:count, 0] * hm_w).astype(np.int64)
    rows = np.trunc(points[:count, 1] * hm_h).astype(np.int64)
    inside = np.nonzero((cols >= 0) & (cols < hm_w) & (rows >= 0) & (rows < hm_h))[0]
    if not len(inside):
        return out
    # Cells outside the heatmap weigh nothing (a logit of -inf), as MediaPipe's loop skips them.
    padded = np.pad(heatmap, ((half, half), (half, half), (0, 0)), constant_values=-np.inf)
    offsets = np.arange(_HEATMAP_KERNEL)
    r = rows[inside][:, None, None] + offsets[None, :, None]      # padded coordinates
    c = cols[inside][:, None, None] + offsets[None, None, :]
    conf = _sigmoid(padded[r, c, inside[:, None, None]])
    total = conf.sum(axis=(1, 2))
    best = conf.max(axis=(1, 2))
    x = ((c - half) * conf).sum(axis=(1, 2))
    y = ((r - half) * conf).sum(axis=(1, 2))
    ok = (best >= _HEATMAP_MIN_CONFIDENCE) & (total > 0)
    out[inside[ok], 0] = x[ok] / hm_w / total[ok]
    out[inside[ok], 1] = y[ok] / hm_h / total[ok]
    return out


class _LowPass:
    def __init__(self) -> None:
        self.raw: np.ndarray | None = None
        self.stored: np.ndarray | None = None

    def apply(self, value: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
        self.stored = value if self.stored is None else alpha * value + (1 - alpha) * self.stored
        self.raw = value
        return self.stored


class OneEuro:
    """MediaPipe's OneEuroFilter, vectorised over the values of one landmark list."""

    def __init__(self, min_cutoff: float, beta: float, derivate_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.derivate_cutoff = min_cutoff, beta, derivate_cutoff
        self.frequency = 30.0
        self.last_time: float | None = None
        self._x, self._dx = _LowPass(), _LowPass()

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        te = 1.0 / self.frequency
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    def apply(self, time: float, value_scale: float, value: np.ndarray) -> np.ndarray:
        if self.last_time is not None:
            if time <= self.last_time:
                return value
            self.frequency = 1.0 / (time - self.last_time)
        self.last_time = time
        raw = self._x.raw
        dvalue = np.zeros_like(value) if raw is None else (value - raw) * value_scale * \
            self.frequency
        edvalue = self._dx.apply(dvalue, self._alpha(self.derivate_cutoff))
        cutoff = self.min_cutoff + self.beta * np.abs(edvalue)
        return self._x.apply(value, self._alpha(cutoff))


class _Smoother:
    """PoseLandmarkFiltering for one landmark list: visibility low-pass, then one-euro on the
    points in pixels with the value scale 1 / `scale` (the object's size in pixels)."""

    def __init__(self, min_cutoff: float, beta: float) -> None:
        self._params = (min_cutoff, beta)
        self.reset()

    def reset(self) -> None:
        self._visibility = _LowPass()
        self._points = OneEuro(*self._params)

    def apply(self, time: float, points: np.ndarray, visibility: np.ndarray, scale: float,
              width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        vis = self._visibility.apply(visibility, 0.1)
        if scale < 1e-6:
            return points, vis
        size = np.array([width, height, width], dtype=np.float64)
        filtered = self._points.apply(time, 1.0 / scale, points * size)
        return filtered / size, vis


def _output(shapes: list[tuple], size: int) -> int:
    """The index of the output whose elements per batch item number `size`."""
    for i, shape in enumerate(shapes):
        if int(np.prod([d for d in shape[1:]])) == size:
            return i
    raise ValueError(f"no model output of {size} values in {shapes}")


class OnnxPose:
    """Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=smooth) on ONNX
    Runtime. `process(rgb)` on the frames of one video in order -> PoseResult or None."""

    def __init__(self, *, device: str = "auto", threads: int | None = DEFAULT_THREADS,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 smooth: bool = True) -> None:
        self._detector = BundledModel(POSE_DETECTION, device, threads)
        self._landmark = BundledModel(POSE_LANDMARK, device, threads)
        det = self._detector.shapes
        self._det_boxes, self._det_scores = _output(det, len(_ANCHORS) * 12), \
            _output(det, len(_ANCHORS))
        lm = self._landmark.shapes
        self._lm_points = _output(lm, _MODEL_POINTS * 5)
        self._lm_flag = _output(lm, 1)
        self._lm_heatmap = _output(lm, 64 * 64 * _MODEL_POINTS)
        self._min_detection = float(min_detection_confidence)
        self._min_tracking = float(min_tracking_confidence)
        self._smooth = smooth
        # The one-euro settings (min_cutoff, beta) of PoseLandmarkFiltering as compiled into
        # mediapipe 0.10.21 (read from its graph; later sources on GitHub differ).
        self._points = _Smoother(0.05, 80.0)
        self._aux = _Smoother(0.01, 10.0)
        self._rect: geo.Rect | None = None
        self._frames = 0

    def detect(self, rgb: np.ndarray) -> geo.Detections:
        """Poses in the whole frame, best first (boxes and 4 keypoints, normalised)."""
        h, w = rgb.shape[:2]
        rect = geo.letterbox_rect(w, h)
        image = geo.crop(rgb, rect, _DETECTOR_SIZE, zero_border=True, exact=True)
        outputs = self._detector(geo.image_tensor(image, -1.0, 1.0))
        dets = geo.decode(outputs[self._det_boxes], outputs[self._det_scores], _ANCHORS,
                          float(_DETECTOR_SIZE), self._min_detection, 4)
        return geo.project_box(geo.weighted_nms(dets), rect)

    def process(self, rgb: np.ndarray) -> PoseResult | None:
        h, w = rgb.shape[:2]
        time = self._frames * _FRAME_SECONDS
        self._frames += 1
        rect = self._rect
        if rect is None:
            dets = self.detect(rgb)
            if not len(dets):
                self._lost()
                return None
            kps = dets.keypoints[0]
            rect = alignment_rect(kps[0], kps[1], w, h, _DETECTION_SCALE)
        outputs = self._landmark(geo.image_tensor(geo.crop(rgb, rect, _LANDMARK_SIZE, exact=True), 0.0, 1.0))
        flag = float(_sigmoid(outputs[self._lm_flag].reshape(-1)[:1])[0])
        if flag < self._min_tracking + _FLAG_MARGIN:
            self._lost()
            return None
        raw = outputs[self._lm_points].reshape(_MODEL_POINTS, 5).astype(np.float64)
        norm = raw[:, :3] / _LANDMARK_SIZE
        heatmap = outputs[self._lm_heatmap].reshape(64, 64, _MODEL_POINTS)
        norm = refine_from_heatmap(norm, heatmap)
        points = geo.project(norm, rect)
        visibility, presence = _sigmoid(raw[:, 3]), _sigmoid(raw[:, 4])
        body, aux = points[:POSE_POINTS], points[POSE_POINTS:POSE_POINTS + 2]
        body_vis, aux_vis = visibility[:POSE_POINTS], visibility[POSE_POINTS:POSE_POINTS + 2]
        # Both filters' object scale: the side of the alignment region of the unfiltered
        # auxiliary points, before its 1.25 scaling (OBJECT_SCALE_ROI in MediaPipe's graph).
        scale = 2.0 * math.hypot((aux[1, 0] - aux[0, 0]) * w, (aux[1, 1] - aux[0, 1]) * h)
        if self._smooth:
            body, body_vis = self._points.apply(time, body, body_vis, scale, w, h)
        # MediaPipe filters the auxiliary points, which only give the next region, whether
        # smooth_landmarks is on or not.
        aux, _ = self._aux.apply(time, aux, aux_vis, scale, w, h)
        self._rect = alignment_rect(aux[0], aux[1], w, h, _TRACKING_SCALE)
        return PoseResult(body.astype(np.float32), body_vis.astype(np.float32),
                          presence[:POSE_POINTS].astype(np.float32))

    def _lost(self) -> None:
        self._rect = None
        self._points.reset()
        self._aux.reset()

    def reset(self) -> None:
        self._lost()

    def close(self) -> None:
        self._rect = None
