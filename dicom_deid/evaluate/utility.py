"""Landmark and keypoint utility measures (pure NumPy).

Normalised mean error (NME): mean point-to-point distance between the landmarks found on the
original frame and on the de-identified one, divided by the inter-ocular distance (outer eye
corners) measured on the original, in percent. Eye and mouth aspect ratios follow
Soukupova & Cech (2016) on either landmark set.
"""

from __future__ import annotations

import numpy as np

# Outer eye corners (subject's right, left).
MEDIAPIPE_OUTER_EYES = (33, 263)
DLIB68_OUTER_EYES = (36, 45)

# Six points per eye, in the order p1..p6 of the EAR formula (corner, top, top, corner, bottom, bottom).
MEDIAPIPE_EYES = ((33, 160, 158, 133, 153, 144), (362, 385, 387, 263, 373, 380))
DLIB68_EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
# Inner lips: (left corner, right corner, [top, bottom] pairs).
MEDIAPIPE_MOUTH = (78, 308, ((82, 87), (13, 14), (312, 317)))
DLIB68_MOUTH = (60, 64, ((61, 67), (62, 66), (63, 65)))

SCHEMES = {
    "mediapipe": (MEDIAPIPE_OUTER_EYES, MEDIAPIPE_EYES, MEDIAPIPE_MOUTH),
    "dlib68": (DLIB68_OUTER_EYES, DLIB68_EYES, DLIB68_MOUTH),
}


def interocular(points: np.ndarray, scheme: str) -> float:
    a, b = SCHEMES[scheme][0]
    return float(np.linalg.norm(points[a, :2] - points[b, :2]))


def nme(reference: np.ndarray, other: np.ndarray, scheme: str) -> float:
    """NME in percent of the reference's inter-ocular distance (x, y only)."""
    if reference.shape[0] != other.shape[0]:
        raise ValueError(f"landmark counts differ: {reference.shape[0]} vs {other.shape[0]}")
    iod = interocular(reference, scheme)
    if iod <= 0:
        raise ValueError("inter-ocular distance is zero")
    err = np.linalg.norm(reference[:, :2] - other[:, :2], axis=1)
    return float(np.mean(err) / iod * 100.0)


def eye_aspect_ratio(points: np.ndarray, scheme: str) -> float:
    """Mean EAR of both eyes: (|p2-p6| + |p3-p5|) / (2 |p1-p4|)."""
    values = []
    for p1, p2, p3, p4, p5, p6 in SCHEMES[scheme][1]:
        pts = points[:, :2]
        width = np.linalg.norm(pts[p1] - pts[p4])
        height = np.linalg.norm(pts[p2] - pts[p6]) + np.linalg.norm(pts[p3] - pts[p5])
        values.append(height / (2.0 * width) if width > 0 else np.nan)
    return float(np.mean(values))  # type: ignore[arg-type]


def mouth_aspect_ratio(points: np.ndarray, scheme: str) -> float:
    """Inner-lip opening over inner-lip width."""
    left, right, pairs = SCHEMES[scheme][2]
    pts = points[:, :2]
    width = np.linalg.norm(pts[left] - pts[right])
    height = np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in pairs])
    return float(height / width) if width > 0 else float("nan")


def jitter(series: list[np.ndarray | None], scheme: str) -> float | None:
    """Mean second difference of the landmarks over consecutive frames, in percent of the
    inter-ocular distance; runs broken by a missing frame are measured separately."""
    values: list[float] = []
    for t in range(1, len(series) - 1):
        a, b, c = series[t - 1], series[t], series[t + 1]
        if a is None or b is None or c is None:
            continue
        iod = interocular(b, scheme)
        if iod <= 0:
            continue
        second = a[:, :2] - 2.0 * b[:, :2] + c[:, :2]
        values.append(float(np.mean(np.linalg.norm(second, axis=1)) / iod * 100.0))
    return float(np.mean(values)) if values else None


def keypoint_displacement(
    reference: np.ndarray, other: np.ndarray, diagonal: float, threshold: float = 0.05,
) -> tuple[float, float]:
    """(mean displacement in percent of diagonal, PCK: share within threshold * diagonal) over
    keypoints present (not NaN) in both."""
    ok = ~(np.isnan(reference[:, :2]).any(axis=1) | np.isnan(other[:, :2]).any(axis=1))
    if not ok.any() or diagonal <= 0:
        return float("nan"), float("nan")
    d = np.linalg.norm(reference[ok, :2] - other[ok, :2], axis=1)
    return float(np.mean(d) / diagonal * 100.0), float(np.mean(d <= threshold * diagonal))


def bbox_diagonal(points: np.ndarray) -> float:
    pts = points[~np.isnan(points[:, :2]).any(axis=1), :2]
    if len(pts) < 2:
        return 0.0
    return float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))


def landmark_box(points: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = points[:, :2].min(axis=0)
    x1, y1 = points[:, :2].max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# Landmarks of one face on two frames: their boxes overlap at least this much. A face found
# elsewhere (another person, a false detection on a covered region) is not the same face.
MIN_FACE_IOU = 0.3


def match_faces(reference: list[np.ndarray], other: list[np.ndarray],
                min_iou: float = MIN_FACE_IOU) -> list[tuple[int, int]]:
    """Pairs (i, j): each reference face with the other face that overlaps it most (greedy,
    by overlap, each face used once), when the overlap is at least min_iou."""
    boxes_r = [landmark_box(p) for p in reference]
    boxes_o = [landmark_box(p) for p in other]
    cand = sorted(((iou(a, b), i, j) for i, a in enumerate(boxes_r) for j, b in enumerate(boxes_o)),
                  reverse=True)
    used_r: set[int] = set()
    used_o: set[int] = set()
    pairs = []
    for score, i, j in cand:
        if score < min_iou or i in used_r or j in used_o:
            continue
        used_r.add(i)
        used_o.add(j)
        pairs.append((i, j))
    return sorted(pairs)


def matched(reference: np.ndarray | None, others: list[np.ndarray]) -> np.ndarray | None:
    """The face among others that is the same face as reference (or None)."""
    if reference is None or not others:
        return None
    pairs = match_faces([reference], others)
    return others[pairs[0][1]] if pairs else None
