"""Expression kept by a face method, from MediaPipe face-mesh landmarks (pure NumPy).

What diagnosis reads from a face is movement away from the person's own neutral face, so the
measure is a displacement between two states of one face, compared between the original and the
de-identified output (shared/EVALUATION.md, "Expression"):

1. Every capture is put in one canonical frame by a 2-D similarity transform (Umeyama) fitted on
   points that an expression hardly moves: the four eye corners and the nose bridge. The frame is
   the first original capture's, with the outer-eye midpoint at the origin, the eye line along +x
   and the outer-eye distance 1, so displacements are in inter-ocular units and a scaled, rotated
   or shifted output measures the same as an aligned one.
2. The displacement is taken on the expression-bearing points (outer and inner lips with the
   mouth corners, brows, eyelids): d = canon(b) - canon(a), for the originals and for the outputs.
   Identity differences between patient and donor cancel, because each side is differenced
   against its own other capture.
3. cosine = d_out . d_orig / (|d_out| |d_orig|): direction kept (1 kept, 0 erased, < 0 reversed);
   amplitude = |d_out| / |d_orig|; projection = d_out . d_orig / |d_orig|^2 (the share of the
   original movement reproduced, noise orthogonal to it not counted).
4. Two smile measures in the same frame: mouth width (outer corners 61, 291) and mouth-corner
   elevation, measured against the eyes and the nose (the height of the corners above the eye
   line's normal level, in units of the eye-line-to-nose-tip distance). The lip centre is not the
   reference because it drops when the mouth opens, which would read as a corner lift.
   widening_kept = delta width out / delta width orig; corner_lift_kept likewise.

Only x, y are used: MediaPipe's z is a relative depth whose scale differs between images.

The per-video form (`video_expression`) takes the track's own neutral as the per-coordinate
median of its canonical frames (robust to the minority of frames with a blink or a smile) and
compares each frame's displacement from it between original and output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Points an expression hardly moves: outer and inner eye corners, nose bridge (MediaPipe 478).
STABLE_POINTS = (33, 133, 362, 263, 168, 6, 197, 195)
OUTER_EYES = (33, 263)
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)  # outer lip corners, subject's right then left

LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269,
              270, 409)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311,
              310, 415)
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
# Eyelids without the corners, which are among the stable points.
RIGHT_LIDS = (246, 161, 160, 159, 158, 157, 173, 7, 163, 144, 145, 153, 154, 155)
LEFT_LIDS = (466, 388, 387, 386, 385, 384, 398, 249, 390, 373, 374, 380, 381, 382)
EXPRESSION_POINTS = LIPS_OUTER + LIPS_INNER + RIGHT_BROW + LEFT_BROW + RIGHT_LIDS + LEFT_LIDS

# Below this the original barely changed (in inter-ocular units) and a ratio against it is noise.
MIN_CHANGE = 1e-3


@dataclass(frozen=True)
class ExpressionScores:
    """One pair of captures. Ratios are None where the original's change is too small to divide
    by. The raw changes are kept so that a set of pairs can be pooled (`pool`)."""

    cosine: float | None
    amplitude: float | None
    projection: float | None
    widening_kept: float | None
    corner_lift_kept: float | None
    orig_magnitude: float          # |d_orig| over the expression points, inter-ocular units
    orig_widening: float           # change of mouth width, inter-ocular units
    out_widening: float
    orig_corner_lift: float        # change of corner elevation, eye-to-nose units
    out_corner_lift: float

    def as_dict(self) -> dict:
        return asdict(self)


def _xy(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 468 or arr.shape[1] < 2:
        raise ValueError(f"{name}: expected MediaPipe face-mesh landmarks (>= 468 x 2), "
                         f"got shape {arr.shape}")
    if not np.all(np.isfinite(arr[:468, :2])):
        raise ValueError(f"{name}: landmarks contain NaN or infinity")
    return arr[:, :2]


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with target ~ s R source + t (Umeyama 1991, no reflection)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    src, tgt = source - mu_s, target - mu_t
    var = float(np.sum(src ** 2))
    if var <= 0:
        raise ValueError("stable points coincide; cannot align")
    u, sig, vt = np.linalg.svd(tgt.T @ src)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float(np.sum(sig * d) / var)
    return scale, rot, mu_t - scale * rot @ mu_s


def canonical_frame(reference: np.ndarray) -> np.ndarray:
    """The reference's points moved so the outer-eye midpoint is the origin, the eye line is +x
    and the outer-eye distance is 1."""
    xy = _xy(reference, "reference")
    a, b = xy[OUTER_EYES[0]], xy[OUTER_EYES[1]]
    axis = b - a
    iod = float(np.linalg.norm(axis))
    if iod <= 0:
        raise ValueError("reference: outer eye corners coincide")
    c, s = axis / iod
    rot = np.array([[c, s], [-s, c]])
    return (xy - (a + b) / 2.0) @ rot.T / iod


def align(points: np.ndarray, template: np.ndarray, name: str = "landmarks") -> np.ndarray:
    """All points of a capture in the template's frame, by the similarity fitted on the stable
    points."""
    xy = _xy(points, name)
    idx = list(STABLE_POINTS)
    scale, rot, t = similarity_fit(xy[idx], template[idx])
    return scale * xy @ rot.T + t


def smile_index(canon: np.ndarray) -> tuple[float, float]:
    """(mouth width, corner elevation) of a capture already in the canonical frame (y down).

    Width is in inter-ocular units. Elevation is the corners' height above the nose tip in units
    of the eye-line-to-nose-tip height (both measured along the eye line's normal), so it does
    not depend on the lip centre and a moderate head pitch rescales numerator and denominator
    alike."""
    right, left = canon[MOUTH_CORNERS[0]], canon[MOUTH_CORNERS[1]]
    width = float(np.linalg.norm(left - right))
    # Eye line through the outer corners of this capture (after alignment it is near y = 0).
    ea, eb = canon[OUTER_EYES[0]], canon[OUTER_EYES[1]]
    axis = (eb - ea) / max(float(np.linalg.norm(eb - ea)), 1e-12)
    normal = np.array([-axis[1], axis[0]])          # points down the face (y down, x to the left eye)
    mid = (ea + eb) / 2.0
    nose_h = float((canon[NOSE_TIP] - mid) @ normal)
    corner_h = float((((right + left) / 2.0) - mid) @ normal)
    if abs(nose_h) < 1e-9:
        raise ValueError("nose tip on the eye line; cannot measure corner elevation")
    return width, -(corner_h - nose_h) / nose_h


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if abs(den) >= MIN_CHANGE else None


def _compare(d_orig: np.ndarray, d_out: np.ndarray) -> tuple[float | None, float | None,
                                                              float | None, float]:
    o, p = d_orig.ravel(), d_out.ravel()
    n_o, n_p = float(np.linalg.norm(o)), float(np.linalg.norm(p))
    if n_o < MIN_CHANGE:
        return None, None, None, n_o
    cosine = float(o @ p / (n_o * n_p)) if n_p > 0 else 0.0
    return cosine, n_p / n_o, float(o @ p) / n_o ** 2, n_o


def expression_kept(orig_a: np.ndarray, orig_b: np.ndarray, out_a: np.ndarray,
                    out_b: np.ndarray) -> ExpressionScores:
    """How much of the change from capture a to capture b of one person (e.g. London neutral
    to smiling) the de-identified captures keep. Inputs are MediaPipe 478 (or 468) x 2 or x 3
    landmark arrays in pixels: orig_* detected on the originals, out_* on the outputs."""
    template = canonical_frame(orig_a)
    c = {name: align(arr, template, name) for name, arr in
         (("orig_a", orig_a), ("orig_b", orig_b), ("out_a", out_a), ("out_b", out_b))}
    idx = list(EXPRESSION_POINTS)
    d_orig = c["orig_b"][idx] - c["orig_a"][idx]
    d_out = c["out_b"][idx] - c["out_a"][idx]
    cosine, amplitude, projection, magnitude = _compare(d_orig, d_out)
    smiles = {k: smile_index(v) for k, v in c.items()}
    dw_orig = smiles["orig_b"][0] - smiles["orig_a"][0]
    dw_out = smiles["out_b"][0] - smiles["out_a"][0]
    dl_orig = smiles["orig_b"][1] - smiles["orig_a"][1]
    dl_out = smiles["out_b"][1] - smiles["out_a"][1]
    return ExpressionScores(
        cosine=cosine, amplitude=amplitude, projection=projection,
        widening_kept=_ratio(dw_out, dw_orig), corner_lift_kept=_ratio(dl_out, dl_orig),
        orig_magnitude=magnitude, orig_widening=float(dw_orig), out_widening=float(dw_out),
        orig_corner_lift=float(dl_orig), out_corner_lift=float(dl_out))


def pool(scores: Sequence[ExpressionScores]) -> dict:
    """Summary over pairs: medians of the per-pair measures (robust to a pair whose landmarks
    failed), and pooled smile ratios (sum of output changes over sum of original changes, so a
    pair with a tiny original smile does not dominate). Empty input gives Nones and n = 0."""
    def med(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return float(np.median(vals)) if vals else None

    def mean(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals else None

    sw_orig = sum(s.orig_widening for s in scores)
    sl_orig = sum(s.orig_corner_lift for s in scores)
    return {
        "n": len(scores),
        "cosine": med([s.cosine for s in scores]),
        "cosine_mean": mean([s.cosine for s in scores]),
        "amplitude": med([s.amplitude for s in scores]),
        "projection": med([s.projection for s in scores]),
        "widening_kept": med([s.widening_kept for s in scores]),
        "corner_lift_kept": med([s.corner_lift_kept for s in scores]),
        "widening_kept_pooled": _ratio(sum(s.out_widening for s in scores), sw_orig)
        if scores else None,
        "corner_lift_kept_pooled": _ratio(sum(s.out_corner_lift for s in scores), sl_orig)
        if scores else None,
    }


@dataclass(frozen=True)
class VideoExpressionScores:
    """One clip: each frame's displacement from the track's own neutral, original vs output.

    cosine / amplitude / projection are pooled over the clip (all frames' displacements as one
    vector, so still frames with near-zero movement weigh little); frame_r is Pearson's r between
    the per-frame displacement magnitudes (does the output move when the patient moves);
    coordinate_r is Pearson's r over every frame, point and axis of the displacements."""

    frames: int
    cosine: float | None
    amplitude: float | None
    projection: float | None
    frame_r: float | None
    coordinate_r: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or np.std(a) <= 0 or np.std(b) <= 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def track_displacements(frames: Sequence[np.ndarray], template: np.ndarray) -> np.ndarray:
    """(T, P, 2) displacement of the expression points of each frame from the track's neutral,
    the per-coordinate median of the aligned frames."""
    canon = np.stack([align(f, template, f"frame {i}") for i, f in enumerate(frames)])
    idx = list(EXPRESSION_POINTS)
    neutral = np.median(canon[:, idx], axis=0)
    return canon[:, idx] - neutral


def video_expression(orig: Sequence[np.ndarray | None],
                     out: Sequence[np.ndarray | None]) -> VideoExpressionScores:
    """Per-frame expression of a clip against its own neutral, original vs output. Frames where
    either side has no landmarks are left out of both (same frames on each side)."""
    if len(orig) != len(out):
        raise ValueError(f"frame counts differ: {len(orig)} vs {len(out)}")
    kept = [(a, b) for a, b in zip(orig, out, strict=True) if a is not None and b is not None]
    keep = range(len(kept))
    if len(kept) < 3:
        return VideoExpressionScores(len(kept), None, None, None, None, None)
    template = canonical_frame(kept[0][0])
    d_orig = track_displacements([a for a, _ in kept], template)
    d_out = track_displacements([b for _, b in kept], template)
    cosine, amplitude, projection, _ = _compare(d_orig, d_out)
    mag_orig = np.linalg.norm(d_orig.reshape(len(keep), -1), axis=1)
    mag_out = np.linalg.norm(d_out.reshape(len(keep), -1), axis=1)
    return VideoExpressionScores(
        frames=len(keep), cosine=cosine, amplitude=amplitude, projection=projection,
        frame_r=_pearson(mag_orig, mag_out), coordinate_r=_pearson(d_orig.ravel(), d_out.ravel()))
