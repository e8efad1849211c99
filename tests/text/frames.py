"""Small frames with burned-in text, made on the fly (invented identities)."""

from __future__ import annotations

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def background(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with mild noise: a picture with no text in it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([60 + 80 * x / width, 90 + 60 * y / height, 120 + 40 * (x + y) / (width + height)], -1)
    rgb += rng.normal(0, 2.0, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def put(rgb: np.ndarray, text: str, x: int, baseline: int, scale: float = 0.6,
        colour: tuple[int, int, int] = (255, 255, 255), thickness: int = 1,
        font: int = FONT) -> tuple[int, int, int, int]:
    """Draw text in place; returns its ink box (x0, y0, x1, y1), end exclusive."""
    ink = np.zeros(rgb.shape[:2], np.uint8)
    cv2.putText(ink, text, (x, baseline), font, scale, 255, thickness, cv2.LINE_AA)
    cv2.putText(rgb, text, (x, baseline), font, scale, colour, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(ink)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def covered(boxes: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, ...]) -> float:
    """Share of `box` inside the union of `boxes` (int x0 y0 x1 y1)."""
    mask = np.zeros(shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    x0, y0, x1, y1 = box
    return float(mask[y0:y1, x0:x1].mean())
