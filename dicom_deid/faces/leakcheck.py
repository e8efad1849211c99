"""The independent leak check: CenterFace on each output frame.

The tracker runs MediaPipe; this check runs a different detector (CenterFace, another
architecture and training set) on what we are about to emit. A face it finds that does not lie
mostly inside a region we replaced or covered is a leak. A swapped or masked face is still a
face, so it is found, but it lies inside a replaced region and is not a leak.

Detection runs on a downscaled frame (`max_side`): measured with the astronaut pasted into a
1280x720 frame, CenterFace at a longer side of 416 px still scores a 40 px wide face above 0.5
and a 60 px face above 0.7, at about a tenth of the full-resolution cost (see benchmarks/).

The check runs the int8 model by default (models/centerface_int8.onnx, about a third less
CPU per frame; it takes the downscaled frame as NHWC uint8) at a lower threshold than the float
model's: on London faces it never saw, pasted
into 720p frames, int8 at 0.45 finds 98 % of 40 px faces (float at 0.5: 96 %) and all from
60 px, and on every GRID and film frame it keeps every float detection
(benchmarks/centerface_int8.py, results/2026-11-29/centerface_int8.json).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_deid.faces.centerface import CenterFace, Detection

DEFAULT_MAX_SIDE = 416
DEFAULT_PRECISION = "int8"
# Detection score threshold per model precision: int8 scores small faces a little lower.
THRESHOLDS = {"float": 0.5, "int8": 0.45}
# onnxruntime intra-op threads of the default detector. The check runs on every frame beside the
# decoder and encoder threads (and, in the node, beside other workers), so the CPU it costs
# matters more than its latency: one thread does the same work for 3-4 ms less CPU per 720p
# frame than onnxruntime's default of one per core (measured on 2 cores: 42-50 ms against
# 46-53 ms per frame for the whole swap), where the second thread mostly waits at barriers.
DEFAULT_THREADS = 1
# A detection box is a replaced face when at least this share of it is replaced/covered.
MIN_COVERED = 0.5


@dataclass(frozen=True)
class Leak:
    frame: int
    box: tuple[int, int, int, int]
    score: float
    covered_fraction: float


class LeakChecker:
    def __init__(
        self,
        detector: CenterFace | None = None,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
        threshold: float | None = None,
        min_covered: float = MIN_COVERED,
        threads: int | None = DEFAULT_THREADS,
        precision: str = DEFAULT_PRECISION,
        device: str = "auto",
    ) -> None:
        # precision and threads apply to the detector built here (threads None: onnxruntime's
        # default); threshold None is the precision's own (THRESHOLDS).
        if precision not in THRESHOLDS:
            raise ValueError(f"precision must be one of {tuple(THRESHOLDS)}, got {precision!r}")
        self.detector = detector or CenterFace(precision=precision, threads=threads,
                                               device=device)
        self.max_side = int(max_side)
        self.threshold = float(THRESHOLDS[precision] if threshold is None else threshold)
        self.min_covered = float(min_covered)

    def detections(self, rgb: np.ndarray) -> list[Detection]:
        return self.detector.detect(rgb, threshold=self.threshold, max_side=self.max_side)

    def find(self, rgb: np.ndarray, covered: np.ndarray, frame: int) -> list[Leak]:
        """Faces in rgb that lie mostly outside `covered` (uint8 mask, > 0 = replaced)."""
        leaks = []
        h, w = rgb.shape[:2]
        for det in self.detections(rgb):
            x0, y0, x1, y1 = det.box
            bx0, by0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            bx1, by1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
            if bx1 <= bx0 or by1 <= by0:
                continue
            inside = float(np.count_nonzero(covered[by0:by1, bx0:bx1])) / ((bx1 - bx0) * (by1 - by0))
            if inside < self.min_covered:
                leaks.append(Leak(frame, (bx0, by0, bx1, by1), det.score, inside))
        return leaks

    def evidence(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> bool:
        """Is there a face around box in rgb? (the tracker's check on a lost face's region)"""
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = box
        pad = 0.25 * max(x1 - x0, y1 - y0)
        cx0, cy0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
        cx1, cy1 = min(w, int(np.ceil(x1 + pad))), min(h, int(np.ceil(y1 + pad)))
        if cx1 - cx0 < 8 or cy1 - cy0 < 8:
            return False
        crop = rgb[cy0:cy1, cx0:cx1]
        for det in self.detector.detect(crop, threshold=self.threshold * 0.8, max_side=192):
            cx = cx0 + (det.box[0] + det.box[2]) / 2.0
            cy = cy0 + (det.box[1] + det.box[3]) / 2.0
            if x0 <= cx <= x1 and y0 <= cy <= y1:
                return True
        return False
