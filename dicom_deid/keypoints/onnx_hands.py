"""`OnnxHands`: MediaPipe's hand tracking (hand_landmark_full) on ONNX Runtime.

The models are MediaPipe 0.10.21's own (palm_detection_full, hand_landmark_full), converted by
scripts/convert_models.py --body (models/mp_palm_detection_full.onnx,
models/mp_hand_landmark_full.onnx). The steps around them are those of
`mp.solutions.hands.Hands(model_complexity=1)` as compiled into the 0.10.21 wheel (its
HandLandmarkTrackingCpu graph and the PalmDetectionCpu, PalmDetectionDetectionToRoi,
HandLandmarkCpu and HandLandmarkLandmarksToRoi subgraphs, read from the wheel's binary):

- palm detection, run only while fewer hands than max_num_hands are tracked (every frame in
  static mode): the whole frame letterboxed to 192 x 192 (values 0..1, zero border), 2016
  SSD anchors (strides 8, 16, 16, 16; two per cell and layer), scores through a sigmoid,
  kept from min_detection_confidence, weighted NMS (IoU 0.3), the best max_num_hands kept.
- palm -> hand region: the palm box turned so that keypoint 0 (wrist) -> keypoint 2 (middle
  finger MCP) points up, shifted by -0.5 of its height along that direction, squared on its
  long side and scaled by 2.6.
- tracking: the regions of the previous frame's hands (the box of 12 stable points, turned
  by the wrist -> the MCP joints, shifted by -0.1, squared, scaled by 2) are merged with
  the palm regions: a previous region replaces every palm region it overlaps by IoU > 0.5
  (axis-aligned boxes, rotation ignored), as AssociationNormRectCalculator does.
- landmarks: each region warped to 224 x 224 (0..1, border replicated); the hand flag
  (already a probability) must exceed min_tracking_confidence or the hand is dropped; 21
  points (x, y / 224, z / 224 / 0.4) projected back; handedness "Left" when the model's
  score is above 0.5 (as seen in a mirrored image), "Right" otherwise.

Hands has no landmark smoothing, so none is done here.

concurrent=True runs the palm detector on a worker thread while the caller's thread finds the
tracked hands in their regions: neither needs the other's result (the tracked regions replace
the palms they overlap after both are done), onnxruntime and OpenCV release the GIL, and on a
second core the frame's wall time drops by the shorter of the two. The points are the same
as the sequential path's (tests/keypoints/test_onnx_hands.py); the CPU time is not less.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from dicom_deid.faces import mp_geometry as geo
from dicom_deid.onnx_device import BundledModel

PALM_DETECTION = "mp_palm_detection_full.onnx"
HAND_LANDMARK = "mp_hand_landmark_full.onnx"
MODEL_FILES = (PALM_DETECTION, HAND_LANDMARK)
HAND_POINTS = 21
_PALM_SIZE = 192
_PALM_KEYPOINTS = 7
_LANDMARK_SIZE = 224
# TensorsToLandmarksCalculator's normalize_z in HandLandmarkCpu.
_NORMALIZE_Z = 0.4
# SsdAnchorsCalculator: 4 layers, strides 8, 16, 16, 16, aspect ratio 1 plus the interpolated
# scale (two anchors per cell and layer); the three stride-16 layers share one grid.
_ANCHORS = geo.ssd_anchor_centres(_PALM_SIZE, (8, 16), (2, 6))
_NMS_IOU = 0.3
# PalmDetectionDetectionToRoi: rotation from palm keypoint 0 to 2, RectTransformation.
_PALM_START, _PALM_END = 0, 2
_PALM_SCALE, _PALM_SHIFT_Y = 2.6, -0.5
# HandLandmarkLandmarksToRoi.
_TRACK_SCALE, _TRACK_SHIFT_Y = 2.0, -0.1
# The tracking region comes from the points that move least from frame to frame: the wrist,
# thumb CMC to IP and the MCP and PIP joints of the four fingers. Its rotation runs from the
# wrist to the mean of the index and ring MCPs averaged with the middle MCP (points 4, 6, 8 of
# this subset). That is what the wheel's compiled graph computes: fitted on its own regions
# (HAND_ROIS_FROM_LANDMARKS), these agree to 1e-7; all 21 points, as GitHub's
# hand_landmarks_to_rect_calculator.cc reads on its own (commit 2b58cce; the wheel's graph feeds
# it all 21), are off by up to 0.16 of the frame. scripts/show_mediapipe_graph.py prints the graph.
_STABLE = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
_WRIST, _INDEX_MCP, _MIDDLE_MCP, _RING_MCP = 0, 5, 9, 13
_ASSOCIATION_IOU = 0.5
HANDEDNESS_LABELS = ("Left", "Right")
# Idle threads wait instead of two of them fighting over a busy CPU (see faces/onnx_models.py).
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class HandResult:
    """One hand: landmarks (21, 3) normalised by the image (z by its width, as x), the
    handedness label as MediaPipe gives it ("Left"/"Right", for a mirrored image) and its
    score, and the hand flag (presence)."""

    landmarks: np.ndarray
    label: str
    score: float
    presence: float


def transform_rect(rect: geo.Rect, width: int, height: int, scale: float,
                   shift_y: float) -> geo.Rect:
    """RectTransformationCalculator with square_long, scale_x = scale_y and shift_x 0."""
    w, h, r = rect.w, rect.h, rect.rotation
    if r == 0.0:
        x, y = rect.x, rect.y + h * shift_y
    else:
        x = rect.x - height * h * shift_y * math.sin(r) / width
        y = rect.y + height * h * shift_y * math.cos(r) / height
    long_side = max(w * width, h * height)
    return geo.Rect(x, y, long_side / width * scale, long_side / height * scale, r)


def palm_rect(box: np.ndarray, keypoints: np.ndarray, width: int, height: int) -> geo.Rect:
    """PalmDetectionDetectionToRoi: the hand region of one palm detection (normalised box
    xmin, ymin, xmax, ymax and its 7 keypoints)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    angle = geo.rotation(keypoints[_PALM_START], keypoints[_PALM_END], width, height,
                         math.pi / 2)
    rect = geo.Rect((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, angle)
    return transform_rect(rect, width, height, _PALM_SCALE, _PALM_SHIFT_Y)


def landmarks_rect(points: np.ndarray, width: int, height: int) -> geo.Rect:
    """HandLandmarkLandmarksToRoi: the next frame's region from this frame's 21 normalised
    points (HandLandmarksToRectCalculator on the stable subset, then RectTransformation)."""
    x0, y0 = float(points[_WRIST, 0]) * width, float(points[_WRIST, 1]) * height
    mid = (points[_INDEX_MCP, :2] + points[_RING_MCP, :2]) / 2.0
    mid = (mid + points[_MIDDLE_MCP, :2]) / 2.0
    x1, y1 = float(mid[0]) * width, float(mid[1]) * height
    angle = geo.normalize_radians(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))
    reverse = geo.normalize_radians(-angle)
    xy = points[list(_STABLE), :2].astype(np.float64)
    # MediaPipe starts its maxima at the smallest positive float, not at minus infinity.
    tiny = float(np.finfo(np.float32).tiny)
    lo, hi = xy.min(axis=0), np.maximum(xy.max(axis=0), tiny)
    centre = (lo + hi) / 2.0
    size = np.array([width, height], dtype=np.float64)
    d = (xy - centre) * size
    c, s = math.cos(reverse), math.sin(reverse)
    px = d[:, 0] * c - d[:, 1] * s
    py = d[:, 0] * s + d[:, 1] * c
    min_x, max_x = float(px.min()), max(float(px.max()), tiny)
    min_y, max_y = float(py.min()), max(float(py.max()), tiny)
    pcx, pcy = (min_x + max_x) / 2.0, (min_y + max_y) / 2.0
    ca, sa = math.cos(angle), math.sin(angle)
    cx = pcx * ca - pcy * sa + width * centre[0]
    cy = pcx * sa + pcy * ca + height * centre[1]
    rect = geo.Rect(cx / width, cy / height, (max_x - min_x) / width, (max_y - min_y) / height,
                    angle)
    return transform_rect(rect, width, height, _TRACK_SCALE, _TRACK_SHIFT_Y)


def _rect_iou(a: geo.Rect, b: geo.Rect) -> float:
    """IoU of two rects' axis-aligned boxes (NormalizedRect -> Rectangle_f ignores rotation)."""
    ix = min(a.x + a.w / 2, b.x + b.w / 2) - max(a.x - a.w / 2, b.x - b.w / 2)
    iy = min(a.y + a.h / 2, b.y + b.h / 2) - max(a.y - a.h / 2, b.y - b.h / 2)
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def associate(*groups: list[geo.Rect], threshold: float = _ASSOCIATION_IOU) -> list[geo.Rect]:
    """AssociationNormRectCalculator: the rects of all groups, a later one replacing every
    earlier one it overlaps by more than `threshold` (and going to the end of the list)."""
    out: list[geo.Rect] = []
    for group in groups:
        for rect in group:
            out = [kept for kept in out if _rect_iou(rect, kept) <= threshold]
            out.append(rect)
    return out


def _output(names: list[str], name: str) -> int:
    if name not in names:
        raise ValueError(f"the hand model has no output {name!r} (outputs: {names})")
    return names.index(name)


class OnnxHands:
    """Hands(static_image_mode, max_num_hands, model_complexity=1) on ONNX Runtime.
    `process(rgb)` on the frames of one video in order -> list of HandResult (as MediaPipe
    orders them)."""

    def __init__(self, *, device: str = "auto", threads: int | None = DEFAULT_THREADS,
                 static_image_mode: bool = False, max_num_hands: int = 2,
                 min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, concurrent: bool = False) -> None:
        if max_num_hands < 1:
            raise ValueError(f"max_num_hands must be at least 1, got {max_num_hands}")
        self._detector = BundledModel(PALM_DETECTION, device, threads)
        self._landmark = BundledModel(HAND_LANDMARK, device, threads)
        sizes = [int(np.prod(s[1:])) for s in self._detector.shapes]
        self._det_boxes = sizes.index(len(_ANCHORS) * 18)
        self._det_scores = sizes.index(len(_ANCHORS))
        # The TFLite model's outputs in HandLandmarkCpu's split order: landmarks, hand flag,
        # handedness, world landmarks (tf2onnx keeps their names).
        names = [o.name for o in self._landmark.session.get_outputs()]
        self._lm_points = _output(names, "Identity")
        self._lm_flag = _output(names, "Identity_1")
        self._lm_handedness = _output(names, "Identity_2")
        self._static = static_image_mode
        self._max_hands = int(max_num_hands)
        self._min_detection = float(min_detection_confidence)
        self._min_tracking = float(min_tracking_confidence)
        self._rects: list[geo.Rect] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="palm-detection") \
            if concurrent else None

    def detect(self, rgb: np.ndarray) -> geo.Detections:
        """Palms in the whole frame, best first (boxes and 7 keypoints, normalised)."""
        h, w = rgb.shape[:2]
        rect = geo.letterbox_rect(w, h)
        image = geo.crop(rgb, rect, _PALM_SIZE, zero_border=True)
        outputs = self._detector(geo.image_tensor(image, 0.0, 1.0))
        dets = geo.decode(outputs[self._det_boxes], outputs[self._det_scores], _ANCHORS,
                          float(_PALM_SIZE), self._min_detection, _PALM_KEYPOINTS)
        return geo.project_box(geo.weighted_nms(dets, _NMS_IOU), rect)

    def landmarks(self, rgb: np.ndarray, rect: geo.Rect) -> HandResult | None:
        """The hand in one region, or None when its hand flag is not above the threshold."""
        # MediaPipe's own warp: on MediaPipe's regions the points then agree to 0.02 % of the
        # hand's diagonal (0.6 % with warpAffine), for ~0.1 ms more per crop.
        tensor = geo.image_tensor(geo.crop(rgb, rect, _LANDMARK_SIZE, exact=True), 0.0, 1.0)
        outputs = self._landmark(tensor)
        presence = float(np.asarray(outputs[self._lm_flag]).reshape(-1)[0])
        if not presence > self._min_tracking:
            return None
        raw = np.asarray(outputs[self._lm_points], dtype=np.float64).reshape(HAND_POINTS, 3)
        norm = raw / _LANDMARK_SIZE
        norm[:, 2] /= _NORMALIZE_Z
        points = geo.project(norm, rect)
        left = float(np.asarray(outputs[self._lm_handedness]).reshape(-1)[0])
        label, score = (HANDEDNESS_LABELS[0], left) if left >= 1.0 - left else \
            (HANDEDNESS_LABELS[1], 1.0 - left)
        return HandResult(points.astype(np.float32), label, score, presence)

    def process(self, rgb: np.ndarray) -> list[HandResult]:
        h, w = rgb.shape[:2]
        previous = [] if self._static else self._rects
        detecting = len(previous) < self._max_hands
        pending: Future[geo.Detections] | None = None
        if detecting and previous and self._pool is not None:
            pending = self._pool.submit(self.detect, rgb)
        # The tracked regions' hands while the palm detector runs (a tracked region is kept by
        # the association unless a later tracked region overlaps it, so little is wasted).
        tracked = {id(rect): self.landmarks(rgb, rect) for rect in previous} \
            if pending is not None else {}
        palms: list[geo.Rect] = []
        if detecting:
            dets = pending.result() if pending is not None else self.detect(rgb)
            palms = [palm_rect(dets.boxes[i], dets.keypoints[i], w, h)
                     for i in range(min(len(dets), self._max_hands))]
        hands, rects = [], []
        for rect in associate(palms, previous):
            found = tracked[id(rect)] if id(rect) in tracked else self.landmarks(rgb, rect)
            if found is None:
                continue
            hands.append(found)
            rects.append(landmarks_rect(found.landmarks, w, h))
        self._rects = rects
        return hands

    def reset(self) -> None:
        self._rects = []

    def close(self) -> None:
        self._rects = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
