"""The swap's synthetic eyes: the iris sits where the patient looks, the sclera is shaded (not
flat white), and no patient pixel of the eye survives."""

from __future__ import annotations

import cv2
import numpy as np

from dicom_deid.faces import eyes, mesh
from dicom_deid.faces.swap import SwapRenderer
from tests.faces import synth


def _eye_pixels(lm: np.ndarray) -> np.ndarray:
    poly = np.round(lm[list(mesh.RIGHT_EYE), :2] * 4).astype(np.int32)
    box = cv2.boundingRect(poly)
    canvas = np.zeros((box[1] + box[3] + 8, box[0] + box[2] + 8), np.uint8)
    cv2.fillPoly(canvas, [poly], 255)
    ys, xs = np.nonzero(canvas)
    return np.stack([xs, ys], axis=1).astype(np.float64) / 4.0


def _paint(lm: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pix = _eye_pixels(lm)
    upper, lower = mesh.APERTURES[0]
    out = eyes.paint_eye(pix, lm[:, :2], upper, lower, centre, 0.2 * mesh.inter_ocular(lm) / 2,
                         np.array([70, 100, 140], np.float32), np.zeros((len(pix), 3), np.float32),
                         1.0)
    return pix, out


def test_the_iris_follows_the_gaze():
    lm = synth.astronaut_landmarks().astype(np.float64)
    width = np.linalg.norm(lm[133, :2] - lm[33, :2])
    found = []
    for shift in (-0.2, 0.0, 0.2):
        centre = lm[468, :2] + np.array([shift * width, 0.0])
        pix, out = _paint(lm, centre)
        pupil = pix[out.mean(axis=1) < 25]
        found.append(pupil.mean(axis=0))
        assert np.linalg.norm(found[-1] - centre) < 0.1 * width
    assert found[0][0] < found[1][0] - 0.12 * width < found[2][0] - 0.24 * width


def test_the_sclera_is_shaded_not_flat_white():
    lm = synth.astronaut_landmarks().astype(np.float64)
    far = lm[468, :2] + np.array([1000.0, 0.0])       # iris out of the way: sclera only
    pix, out = _paint(lm, far)
    light = out.mean(axis=1)
    assert light.max() < 225                           # never paper white
    assert np.percentile(light, 90) - np.percentile(light, 10) > 30   # corners and lid shade it


def test_swap_paints_no_patient_pixel_inside_the_eyes():
    img = np.ascontiguousarray(synth.astronaut()).copy()
    lm = synth.astronaut_landmarks().astype(np.float32)
    inside = np.zeros(img.shape[:2], np.uint8)
    for contour in (mesh.RIGHT_EYE, mesh.LEFT_EYE):
        cv2.fillPoly(inside, [np.round(lm[list(contour), :2]).astype(np.int32)], 255)
    inner = cv2.erode(inside, np.ones((3, 3), np.uint8)) > 0
    img[inside > 0] = (0, 255, 0)
    out = SwapRenderer(donor_seed=4, shape=0.0).render(img, lm)
    green = (out[inner, 1].astype(int) - np.maximum(out[inner, 0], out[inner, 2])) > 60
    assert inner.sum() > 30 and green.mean() < 0.01
