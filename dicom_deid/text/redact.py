"""Cover text boxes: a solid fill in the box's local background colour, never a blur.

A blur or a pixelation of small text can be undone or read by a model; a fill cannot. The
colour is the median of a thin ring just outside the box, so that text on a device's label
box disappears into the label, and text on the picture leaves a patch of its surroundings'
colour.
"""

from __future__ import annotations

import numpy as np

PAD = 2          # pixels added on every side: anti-aliased edges and shadows lie just outside
GROW = 0.1       # and this share of the box's height: the detector's box is tighter on large text
RING = 3         # width of the ring sampled for the fill colour


def integer_boxes(boxes: np.ndarray, shape: tuple[int, ...], pad: int | None = None) -> np.ndarray:
    """N x 4 int32 boxes (x0, y0, x1, y1, end exclusive), padded and clipped to the frame.

    pad: pixels on every side; None: PAD plus GROW of each box's height (what redaction uses).
    """
    h, w = shape[:2]
    arr = np.asarray(boxes, np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), np.int32)
    arr = arr.reshape(len(arr), -1)[:, :4]
    if pad is None:
        pad = PAD + np.round(GROW * np.maximum(0, arr[:, 3] - arr[:, 1]))
    out = np.empty((len(arr), 4), np.int32)
    out[:, 0] = np.clip(np.floor(arr[:, 0]) - pad, 0, w)
    out[:, 1] = np.clip(np.floor(arr[:, 1]) - pad, 0, h)
    out[:, 2] = np.clip(np.ceil(arr[:, 2]) + pad, 0, w)
    out[:, 3] = np.clip(np.ceil(arr[:, 3]) + pad, 0, h)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep]


def fill_colour(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    ox0, oy0 = max(0, x0 - RING), max(0, y0 - RING)
    ox1, oy1 = min(w, x1 + RING), min(h, y1 + RING)
    outer = rgb[oy0:oy1, ox0:ox1].reshape(-1, 3)
    inside = np.zeros((oy1 - oy0, ox1 - ox0), bool)
    inside[y0 - oy0:y1 - oy0, x0 - ox0:x1 - ox0] = True
    ring = outer[~inside.reshape(-1)]
    if len(ring) == 0:                      # the box is the whole frame
        return np.zeros(3, np.uint8)
    return np.median(ring, axis=0).astype(np.uint8)


def redact(rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Fill every box in `rgb` (in place) and return it; boxes from `integer_boxes`."""
    # Colours are taken before anything is filled, so that neighbouring boxes do not feed
    # each other's fill.
    colours = [fill_colour(rgb, b) for b in boxes]
    for (x0, y0, x1, y1), colour in zip(boxes, colours, strict=True):
        rgb[y0:y1, x0:x1] = colour
    return rgb


def box_mask(shape: tuple[int, ...], boxes: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of the boxes (for reports and the evaluation)."""
    mask = np.zeros(shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask
