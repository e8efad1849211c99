"""Lip thickness: the rendered lips as full as the patient's, within bounds of the mean shape's.

Swap renders the donor's (mean-shape) lips with the patient's mouth opening. A patient with
thinner lips than the mean shape then gets fuller rendered lips, and a landmarker reading the
output places the inner lip contour differently from the original (GRID lbax4n, one clip:
mouth aspect ratio r 0.69 against the original, 0.95 with the thickness kept). Lip thickness
is a weak identity cue, so only each lip's mean thickness (outer contour above the inner one,
across the line through the mouth corners, relative to the mouth width) is the patient's,
clipped to ``bounds`` times the mean shape's; the lip's profile along the mouth stays the mean
shape's. The inner contours (the opening, which `swap._keep_aperture` gives the patient's) stay;
the lip points are placed between the inner and the new outer contour as in the mean shape,
and the skin just outside follows the outer contour, fading out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from dicom_deid.faces import mesh

UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# The skin outside a lip follows its outer contour, fading to nothing at this many lip
# thicknesses beyond it, so that the triangles between lip and skin neither fold nor tear.
SKIN_FADE = 0.5
# Default bounds on the patient's lip thickness relative to the mean shape's.
BOUNDS = (0.8, 1.25)
# Whose profile along the mouth a lip keeps (`keep_lip_thickness`): the mean shape's, or the
# rendered geometry's own.
PROFILES = ("mean", "rendered")


def _frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Origin (mid outer mouth corners), unit vector along the corners, unit normal toward the
    nose, and the corner distance."""
    a, b = points[UPPER_OUTER[0], :2], points[UPPER_OUTER[-1], :2]
    along = (b - a).astype(np.float64)
    width = float(np.hypot(*along))
    if width < 1e-6:
        return a, np.array([1.0, 0.0]), np.array([0.0, -1.0]), 0.0
    along /= width
    origin = (a + b) / 2.0
    normal = np.array([-along[1], along[0]])
    # Toward the nose tip: the upper lip's outer contour is on the positive side.
    if float((points[1, :2] - origin) @ normal) < 0:
        normal = -normal
    return origin, along, normal, width


def _coords(points: np.ndarray, idx: tuple[int, ...] | np.ndarray,
            frame: tuple[np.ndarray, np.ndarray, np.ndarray, float]) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    origin, along, normal, _ = frame
    rel = points[np.asarray(idx), :2].astype(np.float64) - origin
    return rel @ along, rel @ normal


def _heights(points: np.ndarray, frame: tuple[np.ndarray, np.ndarray, np.ndarray, float],
             contour: tuple[int, ...], u: np.ndarray) -> np.ndarray:
    """The height of ``contour`` across the corner line at positions ``u`` along it."""
    cu, ch = _coords(points, contour, frame)
    order = np.argsort(cu)
    return np.interp(u, cu[order], ch[order])


def _lip_heights(points: np.ndarray, frame: tuple[np.ndarray, np.ndarray, np.ndarray, float],
                outer: tuple[int, ...], inner: tuple[int, ...],
                sign: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions along the mouth (in mouth widths) of the outer points between the corners,
    and the lip's thickness there (outer above inner, in mouth widths; 0 where inverted)."""
    u, h_out = _coords(points, outer[1:-1], frame)
    h_in = _heights(points, frame, inner, u)
    return u / frame[3], np.maximum(sign * (h_out - h_in), 0.0) / frame[3]


LIPS = ((UPPER_OUTER, mesh.INNER_LIPS_UPPER, 1.0), (LOWER_OUTER, mesh.INNER_LIPS_LOWER, -1.0))


def thickness(points: np.ndarray) -> tuple[float, float]:
    """(upper, lower) lip thickness: the outer contour's height above the inner one (across
    the corner line, at each outer point between the corners), averaged, in units of the
    outer mouth-corner distance (0, 0 for a degenerate mouth)."""
    frame = _frame(points)
    if frame[3] == 0.0:
        return 0.0, 0.0
    upper, lower = (float(np.mean(_lip_heights(points, frame, *lip)[1])) for lip in LIPS)
    return upper, lower


@dataclass(frozen=True)
class LipRegion:
    """One lip of the mean shape: the points that move with it, each one's place between the
    inner and outer contour (0 inner, 1 outer, above 1 the skin beyond), and the lip's
    thickness profile along the mouth."""

    points: np.ndarray       # (n,) landmark indices
    fraction: np.ndarray     # (n,)
    profile_x: np.ndarray    # (m,) position along the mouth, mouth widths, increasing
    profile_t: np.ndarray    # (m,) thickness there, mouth widths
    mean_thickness: float


@functools.lru_cache(maxsize=4)
def _regions(canonical_bytes: bytes) -> tuple[LipRegion, LipRegion]:
    canonical = np.frombuffer(canonical_bytes, np.float64).reshape(-1, 3)
    pts = canonical[: mesh.MESH_POINTS]
    frame = _frame(pts)
    idx = np.arange(len(pts))
    u, h = _coords(pts, idx, frame)
    left = float(_coords(pts, (UPPER_OUTER[0],), frame)[0][0])
    right = float(_coords(pts, (UPPER_OUTER[-1],), frame)[0][0])
    lo, hi = min(left, right), max(left, right)
    inside = (u > lo) & (u < hi)
    regions = []
    for outer, inner, sign in LIPS:
        x, t = _lip_heights(pts, frame, outer, inner, sign)
        order = np.argsort(x)
        x, t = x[order], t[order]
        h_in = _heights(pts, frame, inner, u)
        span = np.interp(u / frame[3], x, t) * frame[3]
        f = sign * (h - h_in) / np.maximum(span, 1e-6)
        inner_set = set(inner)
        chosen = np.array([i for i in idx[inside & (f > 0.05) & (f < 1.0 + SKIN_FADE)]
                           if i not in inner_set], np.int64)
        regions.append(LipRegion(chosen, f[chosen], x, t, float(np.mean(t))))
    return regions[0], regions[1]


def lip_regions(canonical: np.ndarray) -> tuple[LipRegion, LipRegion]:
    """The (upper, lower) lip regions of the mean shape ``canonical``, cached."""
    return _regions(np.ascontiguousarray(canonical, np.float64).tobytes())


def lip_region(canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the points that move with the upper and with the lower lip."""
    upper, lower = lip_regions(canonical)
    return upper.points, lower.points


def keep_lip_thickness(out: np.ndarray, landmarks: np.ndarray, canonical: np.ndarray,
                       bounds: tuple[float, float] = BOUNDS,
                       profile: str = "mean",
                       reference: np.ndarray | None = None) -> tuple[float, float]:
    """Give each lip of ``out`` (478, 3, changed in place) the patient's (``landmarks``) mean
    thickness, clipped to ``bounds`` times the mean shape's (``canonical``), with the mean
    shape's profile along the mouth. Returns the (upper, lower) thickness set, in units of the
    mean shape's.

    ``profile`` "rendered": each lip takes the profile along the mouth of ``reference`` (the
    rendered geometry before its mouth opening was made the patient's; ``out`` when None)
    instead, scaled so that its mean thickness is the patient's, clipped to ``bounds`` times
    ``reference``'s (the returned scales are then relative to ``reference``'s lips). The rendered
    geometry carries the expression (a smile thins the lips toward the corners and stretches
    them), which the mean shape's profile, the same for every expression, would take away."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    frame = _frame(out)
    if frame[3] == 0.0 or _frame(landmarks)[3] == 0.0:
        return 1.0, 1.0
    want = thickness(landmarks)
    source = out if reference is None else reference
    have = thickness(source) if profile == "rendered" else None
    if have is not None and _frame(source)[3] == 0.0:
        return 1.0, 1.0
    applied = []
    regions = lip_regions(canonical)
    for k, (outer, inner, sign) in enumerate(LIPS):
        region = regions[k]
        base = region.mean_thickness if have is None else have[k]
        scale = float(np.clip(want[k] / max(base, 1e-6), *bounds))
        applied.append(scale)
        if len(region.points) == 0:
            continue
        u, h = _coords(out, region.points, frame)
        h_in = _heights(out, frame, inner, u)
        # The outer contour's height, interpolated as the thickness is (not as a height), so
        # that a lip already as thick as wanted is left exactly where it is.
        x_now, t_now = _lip_heights(out, frame, outer, inner, sign)
        order = np.argsort(x_now)
        h_out = h_in + sign * np.interp(u / frame[3], x_now[order], t_now[order]) * frame[3]
        if have is None:
            t_new = scale * np.interp(u / frame[3], region.profile_x, region.profile_t) * frame[3]
        else:
            # The reference's thickness at the same place along the mouth, in its own widths.
            ref_frame = _frame(source)
            x_ref, t_ref = _lip_heights(source, ref_frame, outer, inner, sign)
            order_ref = np.argsort(x_ref)
            t_new = scale * np.interp(u / frame[3], x_ref[order_ref], t_ref[order_ref]) * frame[3]
        f = region.fraction
        # Inside the lip each point takes its mean-shape place between the contours.
        target = h_in + sign * np.clip(f, 0.0, 1.0) * t_new
        # Beyond the outer contour the skin follows its shift, fading out over SKIN_FADE
        # thicknesses, but never nearer the new contour than its mean-shape place.
        skin = f > 1.0
        fade = np.clip(1.0 - (f - 1.0) / SKIN_FADE, 0.0, 1.0)
        shifted = h + fade * ((h_in + sign * t_new) - h_out)
        floor = h_in + sign * f * t_new
        beyond = np.where(sign > 0, np.maximum(shifted, floor), np.minimum(shifted, floor))
        target = np.where(skin, beyond, target)
        out[region.points, :2] += ((target - h)[:, None] * frame[2][None, :]).astype(out.dtype)
    return applied[0], applied[1]
