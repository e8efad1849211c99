"""The synthetic mouth interior: teeth under the upper lip, a dark cavity below, a tongue in a
wide-open mouth, smooth edges, and none of the patient's own mouth pixels."""

from __future__ import annotations

import numpy as np

from dicom_deid.faces import mesh, mouth
from dicom_deid.faces.swap import SwapRenderer
from tests.faces import synth


def _open_mouth(amount: float) -> np.ndarray:
    lm = synth.astronaut_landmarks().astype(np.float64).copy()
    iod = mesh.inter_ocular(lm)
    lower = list(mesh.INNER_LIPS_LOWER[1:-1])
    # Open in a smooth arc, most at the centre, as a jaw drop does.
    u = np.sin(np.pi * np.arange(1, len(mesh.INNER_LIPS_LOWER) - 1) / (len(mesh.INNER_LIPS_LOWER) - 1))
    lm[lower, 1] += amount * iod * u
    return lm


def _column(lm: np.ndarray, samples: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Pixels down the middle of the opening, from the upper to the lower inner-lip edge."""
    top, bottom = lm[13, :2], lm[14, :2]
    pix = top + np.linspace(0.02, 0.98, samples)[:, None] * (bottom - top)
    return pix, mouth.paint_mouth(pix, lm[:, :2], mesh.inter_ocular(lm),
                                  np.zeros((samples, 3), np.float32), 1.0)


def test_teeth_under_the_upper_lip_then_a_dark_cavity():
    lm = _open_mouth(0.15)
    _, colours = _column(lm)
    light = colours.mean(axis=1)
    assert light[:5].mean() > 150            # upper incisors
    assert light[25:45].mean() < 70          # the cavity behind them
    assert colours[5:].mean(axis=0)[0] > colours[5:].mean(axis=0)[2]   # reddish, not grey


def test_teeth_height_does_not_grow_with_the_opening():
    def teeth_px(amount: float) -> float:
        lm = _open_mouth(amount)
        pix, colours = _column(lm, 200)
        bright = colours.mean(axis=1) > 120
        step = np.linalg.norm(pix[1] - pix[0])
        return float(bright[: np.argmin(bright) if not bright.all() else None].sum() * step)

    small, large = teeth_px(0.15), teeth_px(0.35)
    assert small > 0 and abs(large - small) < 0.35 * small


def test_wide_open_mouth_shows_a_tongue_and_lower_teeth():
    lm = _open_mouth(0.4)
    _, colours = _column(lm)
    lower_part = colours[-15:]
    assert (lower_part[:, 0] > lower_part[:, 2] + 30).any()   # reddish tongue
    assert lower_part.mean(axis=1)[-3:].mean() > 90           # lower incisors at the lip


def test_the_contour_is_anti_aliased_against_the_lips():
    lm = _open_mouth(0.15)
    iod = mesh.inter_ocular(lm)
    down = (lm[14, :2] - lm[13, :2]) / np.linalg.norm(lm[14, :2] - lm[13, :2])
    pix = np.stack([lm[13, :2], lm[13, :2] + 3 * down])

    def paint(lip: float) -> np.ndarray:
        return mouth.paint_mouth(pix, lm[:, :2], iod, np.full((2, 3), lip, np.float32), 1.0)

    # On the lip edge itself half of the lip's colour shows; three pixels inside, none.
    assert np.allclose(paint(200.0)[0] - paint(0.0)[0], 100.0, atol=1.0)
    assert np.allclose(paint(200.0)[1], paint(0.0)[1])


def test_swap_paints_no_patient_pixel_inside_the_mouth():
    img = np.ascontiguousarray(synth.astronaut()).copy()
    lm = _open_mouth(0.25).astype(np.float32)
    poly = np.round(lm[list(mesh.INNER_LIPS), :2]).astype(np.int32)
    import cv2

    inside = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(inside, [poly], 255)
    inner = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0
    img[inside > 0] = (0, 255, 0)                   # a bright green "patient" mouth
    out = SwapRenderer(donor_seed=4, shape=0.0).render(img, lm)
    green = (out[inner, 1].astype(int) - np.maximum(out[inner, 0], out[inner, 2])) > 60
    assert inner.sum() > 50 and green.mean() < 0.01
