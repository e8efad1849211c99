"""PP-OCRv4 text detection and recognition on ONNX Runtime (models/ppocr, Apache-2.0).

    det = TextDetector()
    boxes = det.detect(rgb)                 # N x 5 float32: x0, y0, x1, y1, score (pixels)
    rec = TextRecognizer()
    texts = rec.read(rgb, boxes)            # [(text, confidence)] per box

The models are PaddleOCR's PP-OCRv4 detector (DB, a per-pixel text probability map) and
recogniser (SVTR, CTC over the character list stored in the model's metadata), as shipped in
the `rapidocr-onnxruntime` 1.4.4 wheel. The pre- and post-processing here follow PaddleOCR's
(DBPostProcess, CTCLabelDecode) but return axis-aligned boxes: overlays are horizontal, and a
box that holds a rotated line whole is what redaction needs. One session per model per
process (`shared_detector`, `shared_recognizer`), as loading takes about a second.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import cv2
import numpy as np

DET_MODEL = "ppocr/ch_PP-OCRv4_det_infer.onnx"
REC_MODEL = "ppocr/ch_PP-OCRv4_rec_infer.onnx"


def _session(name: str, threads: int | None, device: str = "auto"):
    from dicom_deid.onnx_device import make_session
    from dicom_deid.resources import model_path

    # As for CenterFace (faces/centerface.py): idle threads sleep (make_session), the cores
    # are shared with the face stage and the encoder.
    return make_session(model_path(name), device, threads=threads)


def _normalise(bgr: np.ndarray) -> np.ndarray:
    # PaddleOCR's mean 0.5, std 0.5 on [0, 1]: (x / 255 - 0.5) / 0.5
    x = bgr.astype(np.float32) * (2.0 / 255.0) - 1.0
    return x.transpose(2, 0, 1)[None]


class TextDetector:
    """PP-OCRv4 DB text detector.

    max_side: frames are scaled so that the longer side is at most this (multiples of 32);
    min_side: small frames are scaled up so that the shorter side is at least this, which is
    what lets 10 px text in a 288-row frame be found.
    """

    def __init__(self, *, threads: int | None = None, max_side: int = 1280, min_side: int = 480,
                 threshold: float = 0.3, box_threshold: float = 0.45, unclip: float = 1.6,
                 device: str = "auto") -> None:
        self._session = _session(DET_MODEL, threads, device)
        self._input = self._session.get_inputs()[0].name
        self.max_side, self.min_side = max_side, min_side
        self.threshold, self.box_threshold, self.unclip = threshold, box_threshold, unclip
        self._lock = threading.Lock()

    def scale_for(self, h: int, w: int) -> float:
        """The factor a frame of h x w is scaled by before detection."""
        scale = 1.0
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
        elif min(h, w) < self.min_side:
            scale = min(self.min_side / min(h, w), self.max_side / max(h, w))
        return scale

    def _scale(self, h: int, w: int, scale: float | None) -> tuple[int, int]:
        if scale is None:
            scale = self.scale_for(h, w)
        return max(32, int(round(h * scale / 32)) * 32), max(32, int(round(w * scale / 32)) * 32)

    def probability(self, rgb: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, tuple[float, float]]:
        """The text probability map at the model's input size (float32 in 0..1), and the
        (row, column) factors from that size back to the frame's."""
        h, w = rgb.shape[:2]
        nh, nw = self._scale(h, w, scale)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if (nh, nw) != (h, w):
            bgr = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        with self._lock:
            prob = self._session.run(None, {self._input: _normalise(bgr)})[0][0, 0]
        return prob, (h / nh, w / nw)

    def detect(self, rgb: np.ndarray, scale: float | None = None) -> np.ndarray:
        """Text boxes in `rgb` (HxWx3 uint8): N x 5 float32, x0 y0 x1 y1 score, in pixels.

        scale: the factor to scale by (a crop of a frame is detected at the frame's scale, so
        that a region check finds what a full detection would); None: from the frame's size.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 frame, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        if h < 4 or w < 4:
            return np.zeros((0, 5), np.float32)
        prob, (sy, sx) = self.probability(rgb, scale)
        mask = (prob > self.threshold).astype(np.uint8)
        # PaddleOCR's use_dilation: joins the strokes of one small word.
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        out = []
        for i in range(1, n):
            x, y, bw, bh, area = stats[i]
            if min(bw, bh) < 2:
                continue
            region = labels[y:y + bh, x:x + bw] == i
            score = float(prob[y:y + bh, x:x + bw][region].mean())
            if score < self.box_threshold:
                continue
            # DB's unclip: the map marks a shrunk text kernel; grow it back by
            # area * ratio / perimeter on every side.
            d = area * self.unclip / (2.0 * (bw + bh))
            x0, y0 = (x - d) * sx, (y - d) * sy
            x1, y1 = (x + bw + d) * sx, (y + bh + d) * sy
            out.append((max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1), score))
        return np.array(out, np.float32).reshape(-1, 5)


class TextRecognizer:
    """PP-OCRv4 recogniser: the text in each box, with its mean character confidence."""

    HEIGHT = 48

    def __init__(self, *, threads: int | None = None, device: str = "auto") -> None:
        self._session = _session(REC_MODEL, threads, device)
        self._input = self._session.get_inputs()[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise ValueError(f"{REC_MODEL}: no character list in the model's metadata")
        # CTC: index 0 is the blank, the last is the space (PaddleOCR's use_space_char).
        self.characters = ["", *meta["character"].splitlines(), " "]
        self._lock = threading.Lock()

    def read(self, rgb: np.ndarray, boxes: np.ndarray) -> list[tuple[str, float]]:
        out = []
        h, w = rgb.shape[:2]
        arr = np.asarray(boxes, np.float32)
        for box in arr.reshape(-1, arr.shape[-1] if arr.ndim == 2 else 4):
            x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
            x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
            if x1 - x0 < 2 or y1 - y0 < 2:
                out.append(("", 0.0))
                continue
            out.append(self.read_crop(rgb[y0:y1, x0:x1]))
        return out

    def read_crop(self, crop: np.ndarray) -> tuple[str, float]:
        h, w = crop.shape[:2]
        nw = max(8, min(2048, int(np.ceil(self.HEIGHT * w / h))))
        bgr = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR)
        bgr = cv2.resize(bgr, (nw, self.HEIGHT), interpolation=cv2.INTER_LINEAR)
        with self._lock:
            probs = self._session.run(None, {self._input: _normalise(bgr)})[0][0]
        index = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        chars, scores, last = [], [], -1
        for i, c in zip(index, conf, strict=True):
            if i != last and i != 0 and i < len(self.characters):
                chars.append(self.characters[i])
                scores.append(float(c))
            last = i
        return "".join(chars), (float(np.mean(scores)) if scores else 0.0)


@lru_cache(maxsize=2)
def shared_detector(threads: int | None = None, device: str = "auto") -> TextDetector:
    """One detector per process and device: the session is thread-safe behind its lock."""
    return TextDetector(threads=threads, device=device)


@lru_cache(maxsize=2)
def shared_recognizer(threads: int | None = None, device: str = "auto") -> TextRecognizer:
    return TextRecognizer(threads=threads, device=device)
