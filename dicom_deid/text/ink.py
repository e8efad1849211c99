"""Shrink a detected text box to the ink it holds, where the ink can be told from its ground.

The detector's box is its text kernel grown back by DB's unclip distance, which is generous on
small text: a 10 px time in a 675 px still got a 48 x 27 box around ink 8 px tall (measured on
the text_eval set: most of the area redacted where no text is came from such margins, not from
boxes over things that are not text). Where the box's rim is a plain ground (a label box, a
flat picture) and the text stands out clearly, the pixels that differ clearly from it are the
text, and the box can shrink to them, when that is no more than the detector's margin. Where the rim is
busy (text straight on a textured picture) or the text is faint, nothing here can tell text
from picture, and the box is kept as found: fail closed.
"""

from __future__ import annotations

import numpy as np

FLOOR = 20           # grey levels from the ground that are ink at least
RELATIVE = 0.4       # and this share of the strongest contrast in the box (its 99th percentile)
BUSY_RIM = 0.15      # share of the rim that is "ink" above which the ground is not plain
MARGIN = 0.25        # ink height added around the ink (anti-aliasing, shadows, accents)
CLEAR = 60           # contrast (99th percentile) under which the text is too faint to be told
                     # from the picture's shading, and the box is kept
SHRINK_X = 0.6       # most a side may move in, as a share of the box's height: left and right
SHRINK_Y = 0.4       # top and bottom (more: the ink is not the text, the box is kept)


def tighten(rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """`boxes` (N x 4+ float, x0 y0 x1 y1 ...) shrunk to their ink; never grown, other
    columns kept."""
    out = np.array(boxes, np.float32, copy=True).reshape(len(boxes), -1) if len(boxes) else \
        np.zeros((0, 5), np.float32)
    h, w = rgb.shape[:2]
    for row in out:
        x0, y0 = max(0, int(row[0])), max(0, int(row[1]))
        x1, y1 = min(w, int(np.ceil(row[2]))), min(h, int(np.ceil(row[3])))
        if x1 - x0 < 6 or y1 - y0 < 6:
            continue
        found = _ink_box(rgb[y0:y1, x0:x1])
        if found is None:
            continue
        ix0, iy0, ix1, iy1 = found
        grow = max(2.0, MARGIN * (iy1 - iy0))
        new = (max(row[0], x0 + ix0 - grow), max(row[1], y0 + iy0 - grow),
               min(row[2], x0 + ix1 + grow), min(row[3], y0 + iy1 + grow))
        # The detector's margin (DB's unclip) is about a third of the box's height on every
        # side; ink that would move a side in further is not the box's text (seen: light text
        # on a white shirt, the "ink" a fold at one end of the line), and the box is kept.
        height = row[3] - row[1]
        if max(new[0] - row[0], row[2] - new[2]) > SHRINK_X * height or \
                max(new[1] - row[1], row[3] - new[3]) > SHRINK_Y * height:
            continue
        row[:4] = new
    return out


def _ink_box(crop: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box of the pixels that differ clearly from the crop's plain rim, or None
    where the rim is not plain or nothing differs (then the box stays as it is)."""
    pixels = crop.astype(np.int16)
    rim = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    ground = np.median(rim, axis=0)
    diff = np.abs(pixels - ground).max(axis=2)
    strongest = float(np.percentile(diff, 99))
    if strongest < CLEAR:
        return None
    level = max(FLOOR, RELATIVE * strongest)
    ink = diff > level
    rim_ink = np.concatenate([ink[0], ink[-1], ink[1:-1, 0], ink[1:-1, -1]])
    if rim_ink.mean() > BUSY_RIM:
        return None
    rows = np.flatnonzero(ink.sum(axis=1) >= 2)
    cols = np.flatnonzero(ink.sum(axis=0) >= 1)
    if not len(rows) or not len(cols):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
