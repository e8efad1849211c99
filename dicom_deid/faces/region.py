"""Which pixels belong to a face: the landmark hull, optionally grown.

`covered_region(landmarks, frame_shape)` is the contract between the renderers and the
fail-closed logic (docs/CONTRACTS.md): with its defaults it is the convex hull of the
478 MediaPipe landmarks, the pixels a renderer (swap, mask3d) is responsible for.
The baselines and the fail-closed path call it with `forehead` and `margin`, because
MediaPipe's mesh stops well below the hairline and a hull drawn exactly on the landmarks
leaves identifying skin (forehead, jaw line, ears) uncovered.

Masks are uint8 with 255 inside and 0 outside; test them with `mask > 0`.
"""

from __future__ import annotations

import cv2
import numpy as np

# MediaPipe face-mesh silhouette (FACEMESH_FACE_OVAL), in order around the face.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
FOREHEAD_TOP = 10
CHIN = 152
RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263

# Defaults used by the baselines and fail-closed coverage (fractions of the face height,
# forehead-top to chin): the mesh top (point 10) sits about a third of the forehead below
# the hairline, so 0.25 reaches the hairline on an adult face; the margin then takes in
# the jaw line and the ear roots.
BASELINE_FOREHEAD = 0.25
BASELINE_MARGIN = 0.15


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] < 2:
        raise ValueError(f"landmarks must be an N x 2 or N x 3 array, got shape {pts.shape}")
    pts = pts[:, :2]
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks contain NaN or infinite values")
    return pts


def face_height(landmarks: np.ndarray) -> float:
    """Distance forehead-top to chin in pixels (the scale the margins are relative to)."""
    pts = _check_landmarks(landmarks)
    if pts.shape[0] > CHIN:
        h = float(np.linalg.norm(pts[FOREHEAD_TOP] - pts[CHIN]))
        if h > 1.0:
            return h
    span = pts.max(axis=0) - pts.min(axis=0)
    return float(max(span.max(), 1.0))


def region_polygon(
    landmarks: np.ndarray, *, forehead: float = 0.0, margin: float = 0.0
) -> np.ndarray:
    """Convex polygon (K x 2 float, pixels) of the face region.

    forehead: the upper silhouette is extended along the face's own up axis (chin to
    forehead, so it follows head roll) by this fraction of the face height.
    margin: the polygon is then grown by this fraction of the face height on every side.
    """
    pts = _check_landmarks(landmarks)
    h = face_height(pts)
    if forehead > 0 and pts.shape[0] > CHIN:
        up = pts[FOREHEAD_TOP] - pts[CHIN]
        norm = float(np.linalg.norm(up))
        if norm > 1.0:
            up /= norm
            oval = pts[list(FACE_OVAL)]
            eyes = (pts[RIGHT_EYE_OUTER] + pts[LEFT_EYE_OUTER]) / 2.0
            height_above_eyes = (oval - eyes) @ up
            upper = oval[height_above_eyes > 0]
            if len(upper):
                # Scale the lift with how high the point sits, so the extension keeps the
                # rounded shape of the skull instead of a flat-topped box.
                top = max(float(height_above_eyes.max()), 1e-6)
                lift = forehead * h * (height_above_eyes[height_above_eyes > 0] / top)
                pts = np.vstack([pts, upper + lift[:, None] * up[None, :]])
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if margin > 0:
        hull = grow_polygon(hull, margin * h)
    return hull


def grow_polygon(polygon: np.ndarray, pixels: float) -> np.ndarray:
    """Grow a convex polygon outward by about `pixels` (offset along the centroid rays)."""
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if pixels <= 0:
        return poly
    centre = poly.mean(axis=0)
    rays = poly - centre
    lengths = np.linalg.norm(rays, axis=1, keepdims=True)
    lengths[lengths < 1e-6] = 1e-6
    return centre + rays * (1.0 + pixels / lengths)


def polygon_mask(polygon: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 mask (255 inside) of a convex polygon, clipped to the frame.

    The polygon is grown by one pixel before rasterising so that boundary pixels a
    renderer blends (anti-aliasing, partial coverage) count as its own.
    """
    height, width = int(frame_shape[0]), int(frame_shape[1])
    mask = np.zeros((height, width), dtype=np.uint8)
    poly = grow_polygon(polygon, 1.0)
    pts = np.round(poly).astype(np.int32).reshape(-1, 1, 2)
    # Coordinates far outside the frame overflow OpenCV's fixed-point rasteriser.
    limit = 4 * max(height, width) + 16
    pts = np.clip(pts, -limit, limit)
    cv2.fillConvexPoly(mask, pts, 255, lineType=cv2.LINE_8)
    return mask


def covered_region(
    landmarks: np.ndarray,
    frame_shape: tuple[int, ...],
    *,
    forehead: float = 0.0,
    margin: float = 0.0,
) -> np.ndarray:
    """uint8 mask (255 inside, 0 outside) of the face region for a frame of frame_shape.

    With the defaults this is the landmark hull that a renderer must fully replace;
    landmarks are 478 x 3 (or N x 2) in pixels of that frame.
    """
    return polygon_mask(region_polygon(landmarks, forehead=forehead, margin=margin), frame_shape)


def polygon_bbox(polygon: np.ndarray, frame_shape: tuple[int, ...] | None = None) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) box around a polygon, x1/y1 exclusive, clipped to the frame."""
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x0, y0 = np.floor(poly.min(axis=0)).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
    if frame_shape is not None:
        h, w = int(frame_shape[0]), int(frame_shape[1])
        x0, x1 = max(0, min(x0, w)), max(0, min(x1, w))
        y0, y1 = max(0, min(y0, h)), max(0, min(y1, h))
    return int(x0), int(y0), int(x1), int(y1)
