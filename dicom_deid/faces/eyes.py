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

from dicom_deid.faces.mouth import opening_coordinates

SCLERA = np.array([218, 206, 196], np.float32)
CARUNCLE = np.array([196, 120, 118], np.float32)
PUPIL = np.array([16, 12, 12], np.float32)


def paint_eye(pixels_xy: np.ndarray, xy: np.ndarray, upper: tuple[int, ...],
              lower: tuple[int, ...], iris_centre: np.ndarray, iris_radius: float,
              iris_rgb: np.ndarray, skin: np.ndarray, brightness: float) -> np.ndarray:
    """Colours (N, 3) float32 of eye-opening pixels. ``upper``/``lower``: the lid contours from
    the outer corner to the inner one; ``skin``: the rendered colours already at those pixels
    (for the anti-aliased edge); ``brightness``: the face's light level (1 = studio-lit)."""
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
    edge = np.clip(np.minimum(below_upper, above_lower) + 0.5, 0.0, 1.0)[:, None]
    return (out * edge + skin * (1 - edge)).astype(np.float32)
