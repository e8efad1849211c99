"""The swap's synthetic eyes: the iris sits where the patient looks, the sclera is shaded (not
flat white), and no patient pixel of the eye survives."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

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


def _shut(lm: np.ndarray, left_open: float = 0.1) -> np.ndarray:
    """The landmarks with both upper lids lowered to ``left_open`` of the opening above the
    lower lids (a blink), everything else where it was."""
    out = np.array(lm, dtype=np.float32, copy=True)
    for upper, lower in mesh.APERTURES[:2]:
        up, lo = list(upper[1:-1]), list(lower[1:-1])
        out[up, :2] = out[lo, :2] + left_open * (out[up, :2] - out[lo, :2])
    return out


def _band(points: np.ndarray, margin: tuple) -> np.ndarray:
    """Height of each ring point above its contour point, across the corner line, in eye
    widths."""
    a, b, contour, ring = margin
    along = points[b, :2] - points[a, :2]
    width = np.linalg.norm(along)
    across = np.array([-along[1], along[0]]) / width
    return np.abs((points[list(contour), :2] - points[list(ring), :2]) @ across) / width


def test_a_closing_lid_carries_its_margin_down():
    renderer = SwapRenderer(donor_seed=4, shape=0.0)
    lm = synth.astronaut_landmarks().astype(np.float32)
    rings = [i for margin in eyes.UPPER_LID_MARGINS for i in margin[3]]
    others = np.setdiff1d(np.arange(len(lm)), rings)
    bands = []
    for left_open in (0.0, 0.1, 1.0):
        shut = _shut(lm, left_open)
        out = eyes.follow_lid_margin(shut, renderer.lid_bands)
        assert np.array_equal(out[others], shut[others])   # lids and the rest stay the patient's
        bands.append([(_band(shut, m).mean(), _band(out, m).mean(), texture.mean())
                      for m, (texture, _) in zip(eyes.UPPER_LID_MARGINS, renderer.lid_bands,
                                                 strict=True)])
    for (mesh_shut, out_shut, texture), (mesh_10, out_10, _), (mesh_open, out_open, _) in zip(
            *bands, strict=True):
        # Left as the mesh has it, the band stretched by the whole drop of the lid; shut, it is
        # CLOSED_MARGIN of the texture's, and on the way there in between.
        assert mesh_shut > 1.5 * texture
        assert out_shut == pytest.approx(eyes.CLOSED_MARGIN * texture, rel=1e-3)
        assert out_shut < out_10 < 0.8 * mesh_10
        assert out_open == mesh_open                              # an open eye is left alone


def test_a_shut_eye_is_painted_as_a_lash_line_not_an_eyeball():
    lm = _shut(synth.astronaut_landmarks(), left_open=0.04).astype(np.float64)
    pix = _eye_pixels(lm)
    upper, lower = mesh.APERTURES[0]
    radius = 0.2 * mesh.inter_ocular(lm) / 2
    iris = np.array([70, 100, 140], np.float32)
    lash = eyes.lash_colour(np.array([200, 140, 100], np.float32))
    texture = np.full((len(pix), 3), 120.0, np.float32)    # the donor's own eye under the slit

    def paint(shut: bool) -> np.ndarray:
        return eyes.paint_eye(pix, lm[:, :2], upper, lower, lm[468, :2], radius, iris,
                              texture, 1.0, lash, shut=shut)

    out = paint(True)
    assert len(pix) > 5
    assert np.abs(out - lash).max() < 1.0
    # Painted as an open eye, the same slit shows iris, sclera or the texture's eye.
    assert np.abs(paint(False) - lash).max() > 40


def test_swap_renders_shut_eyes_that_mediapipe_reads_as_shut():
    # The independent MediaPipe mesh (static mode, as `dicom-deid evaluate` runs it) on the
    # swapped astronaut, eyes open and lids lowered to a tenth of the opening. Before the lid
    # margin followed the lid and the slit was painted as lashes, the rendered blink read
    # 56-60 % of the open eye (the patient's: 10 %); now 30-38 %.
    from dicom_deid.evaluate.observer import StaticMesh
    from dicom_deid.evaluate.utility import eye_aspect_ratio

    img = np.ascontiguousarray(synth.astronaut())
    lm = synth.astronaut_landmarks().astype(np.float32)
    shut = _shut(lm)
    observer = StaticMesh()
    try:
        for shape in (0.0, 1.0):
            renderer = SwapRenderer(donor_seed=4, shape=shape)
            ears = []
            for landmarks in (lm, shut):
                found = observer.landmarks(renderer.render(img, landmarks))
                assert found
                ears.append(eye_aspect_ratio(found[0], "mediapipe"))
            assert ears[0] > 0.8 * eye_aspect_ratio(lm.astype(np.float64), "mediapipe")
            assert ears[1] < 0.45 * ears[0]
    finally:
        observer.close()


def test_an_open_eye_is_painted_as_before_corners_included():
    # Every eye narrows to nothing at its corners: the lash line is for a shut eye only, never
    # for the corners of an open one (a per-column version painted them, caruncle included).
    lm = synth.astronaut_landmarks().astype(np.float64)
    pix = _eye_pixels(lm)
    upper, lower = mesh.APERTURES[0]
    args = (pix, lm[:, :2], upper, lower, lm[468, :2], 0.2 * mesh.inter_ocular(lm) / 2,
            np.array([70, 100, 140], np.float32), np.zeros((len(pix), 3), np.float32), 1.0,
            np.array([80, 50, 40], np.float32))
    assert np.array_equal(eyes.paint_eye(*args, shut=True), eyes.paint_eye(*args, shut=False))
