"""The traditional methods: blur, pixelate and blackout over a face region.

Strength is relative to the face, not to the frame: a fixed kernel that hides a small face
leaves a large one recognisable. Blur brings the face down to about `BLUR_CELLS` samples over
its height before smoothing, pixelate to `PIXEL_CELLS` blocks; at these settings dlib's
recogniser no longer matches the astronaut (tests/faces/test_baselines.py).
Every pixel inside the mask is rewritten; nothing outside it is touched.
"""

from __future__ import annotations

import cv2
import numpy as np

BASELINES = ("blur", "pixelate", "blackout")
BLUR_CELLS = 10.0
PIXEL_CELLS = 8.0


def _patch_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(ys):
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def apply_baseline(
    frame: np.ndarray,
    mask: np.ndarray,
    method: str,
    face_size: float,
    box: tuple[int, int, int, int] | None = None,
) -> None:
    """Rewrite, in place, the pixels of frame where mask > 0.

    face_size: the face height in pixels (sets the strength). box: the mask's bounding box
    when the caller knows it (x0, y0, x1, y1), else it is computed.
    """
    if method not in BASELINES:
        raise ValueError(f"unknown baseline method {method!r}; expected one of {BASELINES}")
    if box is None:
        box = _patch_box(mask)
        if box is None:
            return
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    sub_mask = mask[y0:y1, x0:x1] > 0
    if not sub_mask.any():
        return
    patch = frame[y0:y1, x0:x1]
    if method == "blackout":
        patch[sub_mask] = 0
        return
    h, w = patch.shape[:2]
    face = max(float(face_size), 4.0)
    if method == "pixelate":
        block = max(2.0, face / PIXEL_CELLS)
        # Blocks anchored to the frame grid, so they do not crawl as the region moves.
        gx0, gy0 = int(x0 // block * block), int(y0 // block * block)
        gx1 = int(np.ceil(x1 / block) * block)
        gy1 = int(np.ceil(y1 / block) * block)
        gx1, gy1 = min(gx1, frame.shape[1]), min(gy1, frame.shape[0])
        big = frame[gy0:gy1, gx0:gx1]
        cols = max(1, int(round((gx1 - gx0) / block)))
        rows = max(1, int(round((gy1 - gy0) / block)))
        small = cv2.resize(big, (cols, rows), interpolation=cv2.INTER_AREA)
        up = cv2.resize(small, (gx1 - gx0, gy1 - gy0), interpolation=cv2.INTER_NEAREST)
        ox, oy = x0 - gx0, y0 - gy0
        patch[sub_mask] = up[oy:oy + h, ox:ox + w][sub_mask]
        return
    # blur: average down to a few cells per face height, smooth, and interpolate back up;
    # as strong as a Gaussian of sigma ~face/6 at a fraction of its cost on large faces.
    pad = int(round(face / 3.0))
    px0, py0 = max(0, x0 - pad), max(0, y0 - pad)
    px1, py1 = min(frame.shape[1], x1 + pad), min(frame.shape[0], y1 + pad)
    src = frame[py0:py1, px0:px1]
    scale = BLUR_CELLS / face
    sw = max(2, int(round(src.shape[1] * scale)))
    sh = max(2, int(round(src.shape[0] * scale)))
    small = cv2.resize(src, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    up = cv2.resize(small, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_CUBIC)
    ox, oy = x0 - px0, y0 - py0
    patch[sub_mask] = up[oy:oy + h, ox:ox + w][sub_mask]
