"""Fast anti-aliased downscaling.

OpenCV's INTER_AREA is a true box filter, but its general (non-integer factor) path is slow:
1280x720 to 416x256 takes about 17 ms, while an exact halving takes under 2 ms. `shrink`
halves with INTER_AREA while the image is at least twice the target, then finishes with one
bilinear step of less than 2x: several times faster, and on a photo the result differs from
the direct area resize by about one grey level on average.
"""

from __future__ import annotations

import cv2
import numpy as np


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` = (width, height), anti-aliased when shrinking."""
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    img = image
    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h:
        rows, cols = img.shape[:2]
        # The exact-halving fast path needs even sides; dropping the last odd row or column
        # moves the image by at most half a target pixel.
        img = cv2.resize(img[: rows - rows % 2, : cols - cols % 2], (cols // 2, rows // 2),
                         interpolation=cv2.INTER_AREA)
    if img.shape[1] == w and img.shape[0] == h:
        return img
    # The last step shrinks by less than 2x: bilinear weights then span about the source
    # pixels a box would, at a fraction of INTER_AREA's general-path cost.
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
