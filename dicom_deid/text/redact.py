"""Cover text boxes: a solid fill in the box's local background colour, never a blur.

A blur or a pixelation of small text can be undone or read by a model; a fill cannot. The
colour is the median of a thin ring just outside the box, so that text on a device's label
box disappears into the label, and text on the picture leaves a patch of its surroundings'
colour.
"""

from __future__ import annotations

import numpy as np

# The margin added on every side is relative to the box's height (anti-aliased edges and shadows
# scale with the glyphs; the detector's box is tighter on large text), at least PAD pixels. A
# fixed 2 px on top of a tenth of the height made 3-4 px on every side of a 13-15 px box (25-30 %
# of its height, beyond ink.tighten's own margin around the ink): on the evaluation's 360 x 288
# clip with 15 small lines that margin alone was 1.38 % of the frame outside any text.
PAD = 2          # pixels at least
GROW = 0.15      # share of the box's height; more than PAD from 14 px boxes on
# A box less tall than this is grown to it before the margin is added: the detector's box
# around a lone character found at 8x can be tighter than the glyph (a 14 px "3" got a box 7 px
# tall, its top row left uncovered with a margin of 2), and no line of text the stage is meant
# to cover (10 px and up) is less tall.
MIN_HEIGHT = 12
RING = 3         # width of the ring sampled for the fill colour


def integer_boxes(boxes: np.ndarray, shape: tuple[int, ...], pad: int | None = None) -> np.ndarray:
    """N x 4 int32 boxes (x0, y0, x1, y1, end exclusive), padded and clipped to the frame.

    pad: pixels on every side; None: GROW of each box's height, at least PAD, boxes less tall
    than MIN_HEIGHT grown to it first (what redaction uses).
    """
    h, w = shape[:2]
    arr = np.asarray(boxes, np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), np.int32)
    arr = arr.reshape(len(arr), -1)[:, :4]
    if pad is None:
        short = np.maximum(0, MIN_HEIGHT - (arr[:, 3] - arr[:, 1])) / 2
        arr = arr.copy()
        arr[:, 1] -= short
        arr[:, 3] += short
        pad = np.maximum(PAD, np.round(GROW * (arr[:, 3] - arr[:, 1])))
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
    strips = [rgb[max(0, y0 - RING):y0, x0:x1], rgb[y1:min(h, y1 + RING), x0:x1],
              rgb[y0:y1, max(0, x0 - RING):x0], rgb[y0:y1, x1:min(w, x1 + RING)]]
    ring = np.concatenate([s.reshape(-1, 3) for s in strips])
    if len(ring) == 0:                      # the box is the whole frame
        return np.zeros(3, np.uint8)
    # The median of each channel (np.median is slow on many small arrays: partition).
    k = len(ring) // 2
    return np.partition(ring, k, axis=0)[k].astype(np.uint8)


def redact(rgb: np.ndarray, boxes: np.ndarray, colours: list[np.ndarray] | None = None) -> np.ndarray:
    """Fill every box in `rgb` (in place) and return it; boxes from `integer_boxes`, colours
    one per box (default: each box's ring in `rgb`)."""
    # Colours are taken before anything is filled, so that neighbouring boxes do not feed
    # each other's fill.
    if colours is None:
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
