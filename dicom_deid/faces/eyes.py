"""A synthetic eyeball for the swap: iris at the patient's iris landmarks (gaze), eyelids from
the mesh, nobody's iris pattern.

The eye opening is painted per pixel in coordinates computed from the lid contours at full
resolution (as the mouth is, see mouth.py): ``u`` from the outer to the inner corner, ``t`` from
the upper lid (0) to the lower lid (1). What made the former eyes look painted: a flat, nearly
white sclera with hard edges. Here the sclera is an off-white that darkens toward both corners
and under the upper lid (the lid and lashes shade the eyeball), the inner corner has a pink
caruncle, the iris has a dark limbal ring, radial fibres and the lid's shadow, and the contour is
anti-aliased against the skin.
"""

from __future__ import annotations

import numpy as np

from dicom_deid.faces import mesh
from dicom_deid.faces.mouth import opening_coordinates

SCLERA = np.array([218, 206, 196], np.float32)
CARUNCLE = np.array([196, 120, 118], np.float32)
PUPIL = np.array([16, 12, 12], np.float32)
LASHES = np.array([84, 60, 50], np.float32)
LASH_SHADE = 0.42
# The lid-margin band's height on a shut eye, as a share of the texture's (open) one, and the
# opening (a share of the texture's) below which the margin starts to follow the lid: an open
# eye is left as the mesh has it (London, 102 photos: the ring moved by 0.75 % of the
# inter-ocular distance in the median photo, 3.9 % at most, when it followed from any opening).
CLOSED_MARGIN = 0.35
CLOSING_FROM = 0.6
# Each eye's upper contour (without its corners) and the ring of mesh points just above it,
# paired point by point. The band between them carries the donor texture's lid margin and
# lashes (dark); the ring above it, the lid skin up to the crease.
UPPER_LID_MARGINS = (
    (mesh.RIGHT_EYE_UPPER[0], mesh.RIGHT_EYE_UPPER[-1], mesh.RIGHT_EYE_UPPER[1:-1],
     (247, 30, 29, 27, 28, 56, 190)),
    (mesh.LEFT_EYE_UPPER[0], mesh.LEFT_EYE_UPPER[-1], mesh.LEFT_EYE_UPPER[1:-1],
     (467, 260, 259, 257, 258, 286, 414)),
)
_LOWER_LIDS = (mesh.RIGHT_EYE_LOWER[1:-1], mesh.LEFT_EYE_LOWER[1:-1])


def _heights(points: np.ndarray, a: int, b: int, contour: tuple[int, ...],
             ring: tuple[int, ...], *others: tuple[int, ...]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]] | None:
    """Distances across the line through the eye corners ``a``, ``b`` (x, y), in units of the
    corner distance and positive toward the lower lid: of the upper ``contour``, of the
    ``ring`` above it (it is always above, which orients the line whichever way the corners
    are listed or the head is turned) and of ``others``; then the normal, one corner distance
    long (to move points by such units). None when the corners coincide."""
    along = points[b, :2] - points[a, :2]
    width = float(np.hypot(*along))
    if width < 1e-6:
        return None
    normal = np.array([-along[1], along[0]]) / width
    mid = (points[a, :2] + points[b, :2]) / 2.0
    if ((points[list(contour), :2] - points[list(ring), :2]) @ normal).mean() < 0:
        normal = -normal

    def across(idx: tuple[int, ...]) -> np.ndarray:
        return (points[list(idx), :2] - mid) @ normal / width

    return across(contour), across(ring), normal * width, [across(o) for o in others]


def lid_margin_bands(uv: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per eye, in the donor texture and in units of the eye's width: the height of the
    lid-margin band (upper contour to the ring above it) and the opening (upper to lower
    contour), per upper-contour point. What `follow_lid_margin` scales."""
    bands = []
    for (a, b, contour, ring), lower in zip(UPPER_LID_MARGINS, _LOWER_LIDS, strict=True):
        found = _heights(uv, a, b, contour, ring, lower)
        if found is None:
            raise ValueError("the texture layout's eye corners coincide")
        h_contour, h_ring, _, (h_lower,) = found
        bands.append((h_contour - h_ring, h_lower - h_contour))
    return tuple(bands)


def follow_lid_margin(geometry: np.ndarray,
                      bands: tuple[tuple[np.ndarray, np.ndarray], ...]) -> np.ndarray:
    """The render geometry with the ring above each upper lid moved down with the lid.

    MediaPipe keeps that ring near the crease while the upper contour drops in a blink, so the
    band between them, which the texture fills with the donor's open-eye lid margin and lashes,
    stretched to a dark stripe as tall as the open eye (GRID lbax4n: the swap's eyes measured
    75-85 % of open at the depth of a blink the patient closed to 20 %). A closing lid carries
    its margin down and unfolds skin from the crease instead, and its lashes, seen edge on,
    thin to a line: as the opening closes from `CLOSING_FROM` of the texture's (``bands``,
    `lid_margin_bands`) to shut, the band goes from the mesh's height to `CLOSED_MARGIN` of the
    texture's, and the skin band above it stretches. A band already that thin is left alone;
    the eye contours never move.
    """
    out = np.array(geometry, dtype=np.float32, copy=True)
    for (a, b, contour, ring), lower, (band, opening) in zip(
            UPPER_LID_MARGINS, _LOWER_LIDS, bands, strict=True):
        found = _heights(out, a, b, contour, ring, lower)
        if found is None:
            continue
        h_contour, h_ring, normal, (h_lower,) = found     # normal: one eye width long
        open_share = (h_lower - h_contour) / np.maximum(opening, 1e-3)
        closing = np.clip(1.0 - open_share / CLOSING_FROM, 0.0, 1.0)
        shift = closing * np.maximum((h_contour - h_ring) - band * CLOSED_MARGIN, 0.0)
        out[list(ring), :2] += (shift[:, None] * normal[None, :]).astype(np.float32)
    return out


def lash_colour(skin_rgb: np.ndarray) -> np.ndarray:
    """The lash line of a shut eye for a face whose mean skin colour is ``skin_rgb``: the skin
    darkened, so that it carries the frame's light (a fixed brown read blue-grey next to the
    orange skin of a warmly lit GRID clip)."""
    return np.asarray(skin_rgb, np.float32) * LASH_SHADE


def paint_eye(pixels_xy: np.ndarray, xy: np.ndarray, upper: tuple[int, ...],
              lower: tuple[int, ...], iris_centre: np.ndarray, iris_radius: float,
              iris_rgb: np.ndarray, skin: np.ndarray, brightness: float | np.ndarray,
              lash_rgb: np.ndarray | None = None, shut: bool = True) -> np.ndarray:
    """Colours (N, 3) float32 of eye-opening pixels. ``upper``/``lower``: the lid contours from
    the outer corner to the inner one; ``skin``: the rendered colours already at those pixels
    (for the anti-aliased edge); ``brightness``: the face's light level (1 = studio-lit; per RGB channel when tinted);
    ``lash_rgb``: the colour of a shut eye's lash line (`lash_colour` of the rendered skin;
    a neutral brown lit by ``brightness`` when None); ``shut``: False paints an eyeball however
    thin the opening (the behaviour before, kept to measure against)."""
    u, t, below_upper, above_lower = opening_coordinates(pixels_xy, xy, upper, lower)
    r = max(float(iris_radius), 1.0)
    corner = np.minimum(u, 1.0 - u)                  # 0 at either corner, 0.5 mid-eye
    # Sclera: shaded toward the corners (the eyeball turns away) and under the upper lid.
    lid_px = max(0.35 * r, 1.0)
    lid_shadow = 1.0 - 0.42 * np.exp(-np.maximum(below_upper, 0.0) / lid_px)
    round_off = 0.62 + 0.38 * np.clip(corner / 0.3, 0.0, 1.0) ** 0.7
    sclera = SCLERA[None, :] * (lid_shadow * round_off)[:, None]
    # The caruncle: the pink inner corner (u near 1).
    a_car = np.clip((u - 0.88) / 0.08, 0.0, 1.0)[:, None]
    out = sclera * (1 - a_car) + CARUNCLE[None, :] * lid_shadow[:, None] * a_car
    # Iris: radial fibres, darker toward the limbus, a dark limbal ring, the lid's shadow.
    d = np.linalg.norm(pixels_xy - iris_centre, axis=1) / r
    angle = np.arctan2(pixels_xy[:, 1] - iris_centre[1], pixels_xy[:, 0] - iris_centre[0])
    fibres = 1.0 + 0.1 * np.sin(angle * 31.0) + 0.06 * np.sin(angle * 67.0 + 1.3)
    radial = 1.05 - 0.3 * np.clip((d - 0.45) / 0.55, 0.0, 1.0)
    limbus = 1.0 - 0.55 * np.clip((d - 0.8) / 0.2, 0.0, 1.0)
    iris = iris_rgb[None, :] * (fibres * radial * limbus * lid_shadow)[:, None]
    a_iris = np.clip((1.0 - d) * r + 0.5, 0.0, 1.0)[:, None]
    a_pupil = np.clip((0.38 - d) * r + 0.5, 0.0, 1.0)[:, None]
    out = out * (1 - a_iris) + iris * a_iris
    out = out * (1 - a_pupil) + PUPIL[None, :] * a_pupil
    # Catch light, up and to one side of the pupil, dimmed under the lid.
    glint = np.linalg.norm(pixels_xy - (iris_centre + np.array([0.3, -0.3]) * r), axis=1) / r
    a_glint = (np.clip((0.12 - glint) * r + 0.5, 0.0, 1.0) * 0.7 * lid_shadow)[:, None]
    out = out * (1 - a_glint) + 240.0 * a_glint
    out = out * brightness
    # The lash line: a soft dark band along the upper lid, then the anti-aliased contour.
    lash = (1.0 - 0.5 * np.exp(-np.maximum(below_upper, 0.0) / max(0.12 * r, 0.6)))[:, None]
    out = out * lash
    # A nearly shut eye shows the lashes of the two lids meeting, not a slit of iris and sclera
    # (a one-pixel blue line under a dark one read as an open eye to MediaPipe): the eyeball
    # fades to the lash colour as the eye's opening closes from 0.9 to 0.3 iris radii.
    edge = np.clip(np.minimum(below_upper, above_lower) + 0.5, 0.0, 1.0)[:, None]
    out = out * edge + skin * (1 - edge)
    if shut and len(out):
        # After the anti-aliased edge: the texture under a one-pixel slit is the donor's eye.
        # By the eye's widest opening, not each column's: every eye narrows to nothing at its
        # corners, and a per-column fade painted the corners of open eyes (the caruncle
        # included) as lashes, which moved London's privacy and expression numbers.
        gap = float(np.max(np.maximum(below_upper, 0.0) + np.maximum(above_lower, 0.0)))
        closed = float(np.clip((0.9 * r - gap) / (0.6 * r), 0.0, 1.0))
        lash_line = LASHES * brightness if lash_rgb is None else np.asarray(lash_rgb, np.float32)
        out = out * (1 - closed) + lash_line[None, :] * closed
    return out.astype(np.float32)
