"""MediaPipe face-mesh topology, similarity fits and a vectorised triangle rasteriser.

The renderers (swap, mask3d) and the donor-model builder share these pieces:

- the 852 triangles of MediaPipe's face-mesh tessellation, plus the triangles that close the
  eye openings and the mouth (so a rendered mesh covers the whole face, holes included);
- contour index lists (eyes, inner lips, face oval, irises) and the eye aspect ratio;
- Umeyama similarity fits (2D and 3D) used for pose and for blending toward the mean shape;
- `rasterize`: per-pixel triangle id and barycentric weights for a whole mesh at once, with a
  depth test, in NumPy (no per-triangle Python loop), so a dense `cv2.remap` map can be built
  once per frame instead of warping 852 triangles one by one.

Landmarks are MediaPipe's 478 points (face mesh with iris, ``refine_landmarks=True``) in pixels:
x, y in the image, z scaled like x, smaller z nearer to the camera.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

LANDMARK_COUNT = 478
MESH_POINTS = 468  # the tessellated points; 468..477 are the iris points

# Contours in order around each opening (MediaPipe's FACEMESH_RIGHT_EYE etc. as polygons).
# "Right" is the subject's right eye, which appears on the left of a frontal image.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
INNER_LIPS_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LIPS_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
RIGHT_EYE = RIGHT_EYE_UPPER + tuple(reversed(RIGHT_EYE_LOWER[1:-1]))
LEFT_EYE = LEFT_EYE_UPPER + tuple(reversed(LEFT_EYE_LOWER[1:-1]))
INNER_LIPS = INNER_LIPS_UPPER + tuple(reversed(INNER_LIPS_LOWER[1:-1]))
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
             109)
# Eyelids and inner lips: (upper contour, lower contour), each from one corner to the other.
# Their openings are expression (blinks, speech), not identity.
APERTURES = (
    (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
    (LEFT_EYE_UPPER, LEFT_EYE_LOWER),
    (INNER_LIPS_UPPER, INNER_LIPS_LOWER),
)
RIGHT_IRIS = (468, 469, 470, 471, 472)  # centre first, then the contour
LEFT_IRIS = (473, 474, 475, 476, 477)
OUTER_EYE_CORNERS = (33, 263)
# Six-point eye aspect ratio (Soukupova & Cech) on the mesh: corner, two upper, corner, two lower.
RIGHT_EAR_POINTS = (33, 160, 158, 133, 153, 144)
LEFT_EAR_POINTS = (263, 387, 385, 362, 380, 373)

# Triangle labels: which part of the face a triangle belongs to.
PART_SKIN, PART_RIGHT_EYE, PART_LEFT_EYE, PART_MOUTH = 0, 1, 2, 3


def _strip(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles between two point chains that share their end points (an eye or mouth opening).

    A strip, not a fan: it stays valid while the opening closes to a line (a blink).
    """
    tris = []
    for i in range(len(upper) - 1):
        a, b, c, d = upper[i], upper[i + 1], lower[i + 1], lower[i]
        if a != d:
            tris.append((a, b, d))
        if b != c:
            tris.append((b, c, d))
    return tris


@functools.cache
def tessellation_triangles() -> np.ndarray:
    """The 852 triangles of MediaPipe's face-mesh tessellation, (852, 3) int32.

    MediaPipe publishes the tessellation as an edge set; its triangles are the 3-cycles of that
    graph except two spurious cycles whose three edges each border three cycles.
    """
    import collections
    import itertools

    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adjacency: dict[int, set[int]] = collections.defaultdict(set)
    for a, b in FACEMESH_TESSELATION:
        adjacency[a].add(b)
        adjacency[b].add(a)
    cycles = set()
    for a, b in FACEMESH_TESSELATION:
        for c in adjacency[a] & adjacency[b]:
            cycles.add(tuple(sorted((a, b, c))))
    edge_use = collections.Counter(e for t in cycles for e in itertools.combinations(t, 2))
    tris = sorted(t for t in cycles
                  if not all(edge_use[e] == 3 for e in itertools.combinations(t, 2)))
    if len(tris) != 852:
        raise RuntimeError(f"unexpected MediaPipe tessellation: {len(tris)} triangles, not 852")
    return np.asarray(tris, dtype=np.int32)


@functools.cache
def hole_triangles() -> tuple[np.ndarray, np.ndarray]:
    """Triangles closing the two eye openings and the mouth, and their part labels."""
    tris, parts = [], []
    for upper, lower, part in ((RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, PART_RIGHT_EYE),
                               (LEFT_EYE_UPPER, LEFT_EYE_LOWER, PART_LEFT_EYE),
                               (INNER_LIPS_UPPER, INNER_LIPS_LOWER, PART_MOUTH)):
        strip = _strip(upper, lower)
        tris += strip
        parts += [part] * len(strip)
    return np.asarray(tris, dtype=np.int32), np.asarray(parts, dtype=np.int8)


def oriented(tris: np.ndarray, reference_xy: np.ndarray) -> np.ndarray:
    """The triangles wound counter-clockwise (in image coordinates, y down) on a frontal shape."""
    p = reference_xy[tris]
    cross = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
             - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0]))
    out = tris.copy()
    flip = cross < 0
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def full_mesh(reference_xy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tessellation plus hole triangles, (T, 3), and each triangle's part label, (T,).

    With a frontal ``reference_xy`` the triangles are given one winding, so a flipped triangle in
    a projected mesh shows that it faces away from the camera.
    """
    holes, hole_parts = hole_triangles()
    tris = np.concatenate([tessellation_triangles(), holes])
    parts = np.concatenate([np.full(852, PART_SKIN, np.int8), hole_parts])
    if reference_xy is not None:
        tris = oriented(tris, reference_xy)
    return tris, parts


def eye_aspect_ratio(landmarks: np.ndarray) -> float:
    """Mean six-point eye aspect ratio of both eyes (0 when closed, about 0.25-0.35 open)."""
    values = []
    for idx in (RIGHT_EAR_POINTS, LEFT_EAR_POINTS):
        p = landmarks[list(idx), :2].astype(np.float64)
        vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        horizontal = 2.0 * np.linalg.norm(p[0] - p[3])
        values.append(vertical / horizontal if horizontal > 0 else 0.0)
    return float(np.mean(values))  # type: ignore[arg-type]


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners, in the landmarks' units (x, y only)."""
    a, b = OUTER_EYE_CORNERS
    return float(np.linalg.norm(landmarks[a, :2] - landmarks[b, :2]))


@dataclass(frozen=True)
class Similarity:
    """x' = scale * R @ x + t, applied to row vectors."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation

    def inverse_apply(self, points: np.ndarray) -> np.ndarray:
        return ((points - self.translation) @ self.rotation) / self.scale


def fit_similarity(source: np.ndarray, target: np.ndarray,
                   weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity (Umeyama 1991) taking ``source`` onto ``target``, any dimension."""
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    s0 = src - mu_s
    d0 = dst - mu_d
    cov = (d0 * w[:, None]).T @ s0
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(len(sig))
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = (u * sign) @ vt
    var_s = float(w @ (s0 ** 2).sum(axis=1))
    scale = float((sig * sign).sum() / var_s) if var_s > 0 else 1.0
    return Similarity(scale, rot, mu_d - scale * mu_s @ rot.T)


@dataclass
class Raster:
    """Pixels covered by a mesh: flat arrays, one entry per covered pixel of the ROI."""

    ys: np.ndarray        # int32 row in the ROI
    xs: np.ndarray        # int32 column in the ROI
    tri: np.ndarray       # int32 triangle index
    bary: np.ndarray      # (N, 3) float32 barycentric weights
    shape: tuple[int, int]

    def mask(self) -> np.ndarray:
        out = np.zeros(self.shape, np.uint8)
        out[self.ys, self.xs] = 255
        return out

    def interpolate(self, values: np.ndarray, tris: np.ndarray) -> np.ndarray:
        """Per-pixel barycentric interpolation of per-vertex ``values`` (V, C) -> (N, C)."""
        corner = np.take(values, np.take(tris, self.tri, axis=0), axis=0)   # (N, 3, C)
        return np.einsum("nk,nkc->nc", self.bary, corner, optimize=False)


def rasterize(xy: np.ndarray, depth: np.ndarray, tris: np.ndarray,
              shape: tuple[int, int], cull_back: bool = False) -> Raster:
    """Which triangle covers each pixel centre, and where, for a whole mesh at once.

    ``xy``: (V, 2) vertex positions in ROI pixels; ``depth``: (V,) larger is nearer; ``shape``:
    (rows, cols) of the ROI. Each triangle's bounding box is enumerated with NumPy index
    arithmetic, every candidate pixel gets barycentric weights, and where several triangles
    cover a pixel the nearest one wins. With ``cull_back`` triangles wound clockwise (facing away,
    for meshes given a counter-clockwise winding by `full_mesh`) are skipped.
    """
    rows, cols = shape
    p = xy[tris].astype(np.float32)
    p0, p1, p2 = p[:, 0], p[:, 1], p[:, 2]
    e1 = p1 - p0
    e2 = p2 - p0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep = np.abs(det) > 1e-6
    if cull_back:
        keep &= det > 0
    lo = np.floor(np.minimum(np.minimum(p0, p1), p2)).astype(np.int32)
    hi = np.ceil(np.maximum(np.maximum(p0, p1), p2)).astype(np.int32)
    np.maximum(lo, 0, out=lo)
    np.minimum(hi[:, 0], cols - 1, out=hi[:, 0])
    np.minimum(hi[:, 1], rows - 1, out=hi[:, 1])
    keep &= (hi[:, 0] >= lo[:, 0]) & (hi[:, 1] >= lo[:, 1])
    ids = np.nonzero(keep)[0].astype(np.int32)
    if len(ids) == 0:
        empty = np.zeros(0, np.int32)
        return Raster(empty, empty, empty, np.zeros((0, 3), np.float32), shape)
    # np.take rather than fancy indexing for the row gathers: 3x faster on these sizes, and
    # this runs for every face of every frame.
    lo_k, hi_k = np.take(lo, ids, axis=0), np.take(hi, ids, axis=0)
    w = hi_k[:, 0] - lo_k[:, 0] + 1
    counts = w * (hi_k[:, 1] - lo_k[:, 1] + 1)
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(ids), dtype=np.int32), counts)
    starts = np.cumsum(counts, dtype=np.int32) - counts
    # Per-triangle values are spread over that triangle's candidates with np.repeat (what
    # taking them at `owner` gives, as block copies: several times faster).
    local = np.arange(total, dtype=np.int32)
    local -= np.repeat(starts, counts)
    w_owner = np.repeat(w, counts)
    row = local // w_owner
    col = local - row * w_owner
    # Per-triangle constants gathered once per candidate pixel: the pixel relative to p0,
    # and the two edge vectors scaled by 1/det, give the barycentric weights directly.
    # Each constant spread on its own, so that the products below read contiguous arrays
    # rather than strided columns (the same float32 operations, so the same results).
    inv = (1.0 / det[ids]).astype(np.float32)
    c = [np.repeat(v.astype(np.float32), counts) for v in
         (e2[ids, 1] * inv, -e2[ids, 0] * inv, -e1[ids, 1] * inv, e1[ids, 0] * inv,
          lo_k[:, 0] - p0[ids, 0], lo_k[:, 1] - p0[ids, 1])]
    dx = col.astype(np.float32)
    dx += c[4]
    dy = row.astype(np.float32)
    dy += c[5]
    b1 = dx * c[0]
    b1 += dy * c[1]
    b2 = dx * c[2]
    b2 += dy * c[3]
    eps = -1e-4
    inside = np.nonzero((b1 >= eps) & (b2 >= eps) & (b1 + b2 <= 1.0 - eps))[0]
    owner, b1, b2 = np.take(owner, inside), np.take(b1, inside), np.take(b2, inside)
    lo_own = np.take(lo_k, owner, axis=0)
    px = np.take(col, inside)
    px += lo_own[:, 0]
    py = np.take(row, inside)
    py += lo_own[:, 1]
    t = np.take(ids, owner)
    b0 = 1.0 - b1 - b2
    d = np.take(depth.astype(np.float32)[tris], t, axis=0)
    far = -(b0 * d[:, 0] + b1 * d[:, 1] + b2 * d[:, 2])
    flat = py * cols + px
    # Depth test: the nearest candidate of each pixel wins (ties lie on a shared edge, where
    # either triangle gives the same point).
    zbuf = np.full(rows * cols, np.inf, np.float32)
    np.minimum.at(zbuf, flat, far)
    win = np.nonzero(far <= np.take(zbuf, flat))[0]
    winner = np.full(rows * cols, -1, np.int32)
    winner[np.take(flat, win)] = win
    sel = winner[winner >= 0]
    bary = np.stack([np.take(b0, sel), np.take(b1, sel), np.take(b2, sel)], axis=1)
    np.clip(bary, 0.0, 1.0, out=bary)
    bary /= bary.sum(axis=1, keepdims=True)
    return Raster(np.take(py, sel), np.take(px, sel), np.take(t, sel), bary, shape)


def landmarks_from_image(rgb: np.ndarray) -> np.ndarray | None:
    """478x3 float32 landmarks in pixels of the largest face in a still image, or None.

    A convenience for the donor builder, the tests and the measurement scripts; video goes
    through the tracker in faces/, which smooths and follows faces across frames.
    """
    import mediapipe as mp

    rows, cols = rgb.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as mesh:
        result = mesh.process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
        return None
    lm = result.multi_face_landmarks[0].landmark
    return np.array([(p.x * cols, p.y * rows, p.z * cols) for p in lm], dtype=np.float32)
