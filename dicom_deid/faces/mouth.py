"""A synthetic mouth interior: dark cavity, upper and lower teeth, tongue; no patient pixel.

Every pixel inside the inner-lip contour gets coordinates of its own, computed from the contour
at full resolution rather than interpolated from the coarse mesh raster (which left stair steps
along the lips): ``u`` from one mouth corner (0) to the other (1), and ``t`` from the upper lip's
inner edge (0) to the lower lip's (1) at that ``u``. Teeth are drawn from the upper edge down
to a height in eye distances (real teeth do not grow with the opening), with gaps between
generic teeth, narrowing toward the corners; the lower teeth and the tongue appear only when
the mouth is open wide enough to show them. The contour edge is anti-aliased against the lips.
"""

from __future__ import annotations

import numpy as np

from dicom_deid.faces import mesh

# Tooth boundaries in |u - 0.5| (u: 0..1 corner to corner): central incisors about 15 % of the
# inner mouth width of a smile, then lateral incisor, canine and premolars, seen ever more obliquely.
_TOOTH_EDGES = np.array([0.0, 0.15, 0.26, 0.35, 0.42, 0.48])
UPPER_TEETH = 0.105     # visible height of the upper incisors, in eye distances
LOWER_TEETH = 0.07
CAVITY = np.array([58, 20, 24], np.float32)
TEETH = np.array([226, 218, 200], np.float32)
TONGUE = np.array([150, 68, 72], np.float32)


def opening_coordinates(pixels_xy: np.ndarray, xy: np.ndarray, upper: tuple[int, ...],
                        lower: tuple[int, ...]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For pixels of an opening bounded by the ``upper`` and ``lower`` contours (corner to
    corner, sharing the corners): u (0..1 from the first corner to the last), t (0 on the upper
    contour .. 1 on the lower at that u), and the pixel's distance in pixels below the upper
    contour and above the lower one (negative outside)."""
    pts = xy.astype(np.float64)
    origin = pts[upper[0]]
    along = pts[upper[-1]] - origin
    width = float(np.hypot(*along))
    if width < 1e-6:
        zeros = np.zeros(len(pixels_xy))
        return zeros, zeros, zeros, zeros
    along /= width
    across = np.array([-along[1], along[0]])
    mid_up, mid_lo = pts[upper[len(upper) // 2]], pts[lower[len(lower) // 2]]
    if across @ (mid_lo - mid_up) < 0:   # "across" points from the upper contour to the lower
        across = -across

    def local(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = points - origin
        return d @ along / width, d @ across

    pu, pv = local(pixels_xy.astype(np.float64))
    uu, vu = local(pts[list(upper)])
    ul, vl = local(pts[list(lower)])
    order_u, order_l = np.argsort(uu), np.argsort(ul)
    top = np.interp(pu, uu[order_u], vu[order_u])
    bottom = np.interp(pu, ul[order_l], vl[order_l])
    gap = np.maximum(bottom - top, 1e-3)
    return np.clip(pu, 0.0, 1.0), (pv - top) / gap, pv - top, bottom - pv


def mouth_coordinates(pixels_xy: np.ndarray, xy: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`opening_coordinates` of the inner lips."""
    return opening_coordinates(pixels_xy, xy, mesh.INNER_LIPS_UPPER, mesh.INNER_LIPS_LOWER)


def paint_mouth(pixels_xy: np.ndarray, xy: np.ndarray, iod: float, lips: np.ndarray,
                brightness: float | np.ndarray) -> np.ndarray:
    """Colours (N, 3) float32 for mouth-opening pixels ``pixels_xy`` (N, 2), given the mesh
    points ``xy`` in the same pixel frame, the eye distance ``iod`` in pixels, the rendered lip
    colours already at those pixels (``lips``, for the anti-aliased edge) and the face's
    ``brightness`` (1 = studio-lit)."""
    u, t, below_upper, above_lower = mouth_coordinates(pixels_xy, xy)
    iod = max(float(iod), 1.0)
    centre = np.sin(np.pi * u)                       # 0 at the corners, 1 in the middle
    gap_px = below_upper + above_lower                # local opening in pixels
    # Cavity: darkest in the middle of the opening and toward the corners, where the cheeks
    # shade it; a little light reaches just inside the lips.
    rim = np.exp(-np.minimum(np.maximum(below_upper, 0), np.maximum(above_lower, 0))
                 / max(0.02 * iod, 0.8))
    cavity = CAVITY[None, :] * (0.6 + 0.25 * centre + 0.5 * rim)[:, None]
    out = cavity
    # Tongue: a rounded shape rising from the bottom when the mouth is open.
    open_amount = np.clip((gap_px / iod - 0.1) / 0.12, 0.0, 1.0)
    tongue_top = 1.0 - 0.45 * centre ** 1.5
    a_tongue = np.clip((t - tongue_top) * 6.0, 0.0, 1.0) * open_amount * centre
    tongue = TONGUE[None, :] * (0.55 + 0.35 * t)[:, None]
    out = out * (1 - a_tongue[:, None]) + tongue * a_tongue[:, None]
    # Upper teeth from the lip edge down; the incisal edge rounds off at each tooth's sides.
    half = np.abs(u - 0.5)
    edges = np.concatenate([_TOOTH_EDGES, [1.0]])
    k = np.clip(np.searchsorted(edges, half) - 1, 0, len(_TOOTH_EDGES) - 1)
    lo, hi = edges[k], edges[k + 1]
    pos = np.clip((half - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)   # 0..1 across a tooth
    round_off = 1.0 - 0.22 * (2 * pos - 1) ** 4
    height = UPPER_TEETH * iod * round_off * (0.55 + 0.45 * centre)
    # The back teeth fade into the shadow of the cheeks (the buccal corridor of a smile).
    a_upper = np.clip(height - below_upper + 0.5, 0.0, 1.0) * np.clip((centre - 0.3) / 0.4,
                                                                     0.0, 1.0)
    a_upper *= np.clip(gap_px / max(0.025 * iod, 1.0), 0.0, 1.0)
    width = float(np.hypot(*(xy[mesh.INNER_LIPS_UPPER[-1]] - xy[mesh.INNER_LIPS_UPPER[0]])))
    seam_px = np.abs(half - np.where(pos < 0.5, lo, hi)) * width
    seam = 1.0 - 0.25 * np.clip(1.0 - seam_px / max(0.008 * iod, 0.6), 0.0, 1.0)
    convex = 0.92 + 0.08 * np.sin(np.pi * pos)       # each tooth a little brighter mid-way
    teeth = TEETH[None, :] * (seam * convex * (0.55 + 0.45 * centre)
                              * (1.0 - 0.18 * np.clip(below_upper / max(height.max(), 1), 0, 1))
                              )[:, None]
    out = out * (1 - a_upper[:, None]) + teeth * a_upper[:, None]
    # Lower teeth, in the shadow of the upper lip, only in a wide-open mouth.
    a_lower = np.clip(LOWER_TEETH * iod * (0.5 + 0.5 * centre) - above_lower + 0.5, 0.0, 1.0)
    a_lower *= np.clip((centre - 0.3) / 0.3, 0.0, 1.0) * np.clip(
        (gap_px / iod - 0.22) / 0.08, 0.0, 1.0)
    out = out * (1 - a_lower[:, None]) + (0.7 * teeth) * a_lower[:, None]
    out = out * brightness
    # Anti-aliased contour: pixels within half a pixel of a lip edge mix with the lip.
    edge = np.clip(np.minimum(below_upper, above_lower) + 0.5, 0.0, 1.0)[:, None]
    return (out * edge + lips * (1 - edge)).astype(np.float32)
