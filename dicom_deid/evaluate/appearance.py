"""Appearance measures of a replaced face (shared/EVALUATION.md, "Appearance"), NumPy + OpenCV.

- Boundary contrast: the replaced region is where the output differs from the original (the
  convex hull of the largest connected changed area, so the measure does not depend on what
  each method says it replaced). The mean gradient magnitude of the output on a thin band along
  that region's border is divided by the mean on two bands beside it, just inside and just
  outside. A seam or a dark outline reads above 1; a replacement that blends reads near the
  original's own ratio on the same bands (a face outline has natural edges too, so the
  original's value is reported beside it).
- Skin against neck: CIE Lab colour difference (CIEDE2000) between the face's skin (patches on
  the cheeks and forehead, placed by the original's face mesh) and the neck (a box under the
  chin), on the output and on the original. A face greyer or greener than the neck raises the
  output's value above the original's. Ears are not used: in the data they are mostly hidden by
  hair or turned away, while the neck is visible in every London photo.
- Flicker: mean absolute frame-to-frame change (grey levels) inside the original's face box, on
  the output and on the original; their ratio (1 = as steady as the original).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The output differs from the original by more than this (mean over RGB, 8-bit levels) where the
# face was replaced; video compression of an untouched area stays well under it.
CHANGED_LEVEL = 10.0
OUTER_EYES = (33, 263)
CHIN = 152
# Skin patches: both cheeks (under the eyes, beside the nose) and the forehead.
SKIN_POINTS = (50, 280, 101, 330, 151)


@dataclass(frozen=True)
class BoundaryContrast:
    boundary: float          # mean gradient on the border band, output
    beside: float            # mean gradient on the bands just inside and just outside, output
    ratio: float             # boundary / beside, output
    ratio_original: float    # the same bands on the original
    area: float              # replaced share of the frame


def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _gradient(rgb: np.ndarray) -> np.ndarray:
    import cv2

    g = _grey(rgb)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def replaced_region(original: np.ndarray, output: np.ndarray,
                    level: float = CHANGED_LEVEL) -> np.ndarray | None:
    """Boolean mask of the replaced region, or None where nothing visibly changed."""
    import cv2

    if original.shape != output.shape:
        raise ValueError(f"frame sizes differ: {original.shape} vs {output.shape}")
    diff = np.abs(original.astype(np.int16) - output.astype(np.int16)).mean(axis=2)
    changed = (diff > level).astype(np.uint8)
    side = max(3, int(round(0.01 * max(changed.shape))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, kernel)
    changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < 0.001 * changed.size:
        return None
    ys, xs = np.nonzero(labels == largest)
    hull = cv2.convexHull(np.column_stack([xs, ys]).astype(np.int32))
    mask = np.zeros(changed.shape, np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def _bands(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(border, just inside, just outside), each a few pixels wide, scaled to the region."""
    import cv2

    area = float(mask.sum())
    width = max(2, int(round(0.03 * np.sqrt(area))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    m = mask.astype(np.uint8)
    grown = cv2.dilate(m, kernel).astype(bool)
    shrunk = cv2.erode(m, kernel).astype(bool)
    grown2 = cv2.dilate(grown.astype(np.uint8), kernel, iterations=2).astype(bool)
    shrunk2 = cv2.erode(shrunk.astype(np.uint8), kernel, iterations=2).astype(bool)
    border = grown & ~shrunk
    return border, shrunk & ~shrunk2, grown2 & ~grown


def boundary_contrast(original: np.ndarray, output: np.ndarray,
                      mask: np.ndarray | None = None) -> BoundaryContrast | None:
    """Contrast across the replaced region's border against beside it; None when nothing was
    replaced or the bands fall outside the frame."""
    if mask is None:
        mask = replaced_region(original, output)
    if mask is None:
        return None
    border, inside, outside = _bands(mask)
    if not border.any() or not inside.any() or not outside.any():
        return None
    g_out, g_orig = _gradient(output), _gradient(original)

    def ratio(g: np.ndarray) -> tuple[float, float, float]:
        b = float(g[border].mean())
        beside = (float(g[inside].mean()) + float(g[outside].mean())) / 2.0
        return b, beside, b / max(beside, 1e-6)

    b, beside, r = ratio(g_out)
    return BoundaryContrast(b, beside, r, ratio(g_orig)[2], float(mask.mean()))


def _lab_mean(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    pixels = rgb[mask].reshape(-1, 1, 3).astype(np.float64) / 255.0
    return rgb2lab(pixels).reshape(-1, 3).mean(axis=0)


def skin_regions(shape: tuple[int, ...], mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(face skin mask, neck mask) from the original's face mesh, or None where the neck box
    leaves the frame or the face is too small to sample."""
    h, w = shape[:2]
    pts = np.asarray(mesh)[:, :2]
    iod = float(np.linalg.norm(pts[OUTER_EYES[0]] - pts[OUTER_EYES[1]]))
    if iod < 20:
        return None
    yy, xx = np.mgrid[0:h, 0:w]
    face = np.zeros((h, w), bool)
    radius = 0.09 * iod
    for i in SKIN_POINTS:
        x, y = pts[i]
        face |= (xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2
    cx, cy = pts[CHIN]
    x0, x1 = int(cx - 0.3 * iod), int(cx + 0.3 * iod)
    y0, y1 = int(cy + 0.3 * iod), int(cy + 0.6 * iod)
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h or not face.any():
        return None
    neck = np.zeros((h, w), bool)
    neck[y0:y1, x0:x1] = True
    return face, neck


def skin_neck_delta_e(rgb: np.ndarray, regions: tuple[np.ndarray, np.ndarray]) -> float:
    """CIEDE2000 between the mean Lab colour of the face patches and of the neck box."""
    from skimage.color import deltaE_ciede2000

    face, neck = regions
    return float(deltaE_ciede2000(_lab_mean(rgb, face), _lab_mean(rgb, neck)))


def box_change(previous: np.ndarray, current: np.ndarray,
               box: tuple[float, float, float, float]) -> float | None:
    """Mean absolute grey-level change between two frames inside a box."""
    h, w = current.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    a = _grey(previous[y0:y1, x0:x1])
    b = _grey(current[y0:y1, x0:x1])
    return float(np.abs(a - b).mean())


def flicker_ratio(original_changes: list[float | None], output_changes: list[float | None],
                  ) -> float | None:
    """Mean output change over mean original change, over the frames where both are known."""
    pairs = [(o, d) for o, d in zip(original_changes, output_changes, strict=True)
             if o is not None and d is not None]
    if not pairs:
        return None
    orig = float(np.mean([o for o, _ in pairs]))
    out = float(np.mean([d for _, d in pairs]))
    return out / orig if orig > 1e-6 else None
