"""The swap's edge fade (swap.OUTLINE_FEATHER, render_mesh.feather_map): narrow below the eye
line, where a soft fringe of rendered skin over the background reads as a wider face, and the
full feather at the forehead; the covered face is replaced completely either way."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import mesh, render_mesh, swap
from dicom_deid.faces.swap import SwapRenderer
from tests.faces import synth


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(synth.astronaut()), synth.astronaut_landmarks().astype(np.float32)


def test_feather_map_is_narrow_below_and_wide_above_the_line():
    # A line at row 50 of a 100 x 80 ROI, "down" the image's +y; narrow from the line down,
    # wide from 20 px above it, linear between.
    fmap = render_mesh.feather_map((100, 80), np.array([40.0, 50.0]), np.array([0.0, 1.0]),
                                   wide=12.0, narrow=4.0, start=0.0, end=-20.0)
    assert fmap.shape == (100, 80) and fmap.dtype == np.float32
    assert np.allclose(fmap[50:], 4.0) and np.allclose(fmap[:31], 12.0)
    assert fmap[40, 10] == pytest.approx(8.0)
    # Rotated 90 degrees ("down" along +x): the same profile along the columns.
    turned = render_mesh.feather_map((80, 100), np.array([50.0, 40.0]), np.array([1.0, 0.0]),
                                     wide=12.0, narrow=4.0, start=0.0, end=-20.0)
    assert np.allclose(turned, fmap.T)


def test_composite_fades_over_the_per_pixel_width():
    frame = np.zeros((60, 60, 3), np.uint8)
    cover = np.zeros((60, 60), np.uint8)
    cover[20:40, 20:40] = 255
    rendered = np.full((60, 60, 3), 200, np.uint8)
    fmap = np.full((60, 60), 10.0, np.float32)
    fmap[30:] = 2.0  # narrow in the lower half
    roi = render_mesh.Roi(0, 0, 60, 60)
    render_mesh.composite(frame, roi, rendered, cover, cover, fmap)
    assert (frame[20:40, 20:40] == 200).all()
    # 4 px right of the cover: faded in the upper half (10 px), untouched in the lower (2 px).
    assert 0 < frame[25, 44, 0] < 200 and frame[35, 44, 0] == 0
    plain = np.zeros_like(frame)
    render_mesh.composite(plain, roi, rendered, cover, cover, 10.0)
    assert np.array_equal(plain[:30], frame[:30])


def _fringe(out: np.ndarray, img: np.ndarray, lm: np.ndarray, below: bool) -> int:
    """Changed pixels outside the landmark hull, below (or above) the eye line."""
    hull = render_mesh.hull_mask(lm[:, :2], img.shape[:2]) > 0
    changed = np.any(out != img, axis=2) & ~hull
    eye_row = lm[list(mesh.OUTER_EYE_CORNERS), 1].mean()
    rows = np.arange(img.shape[0])[:, None]
    side = rows > eye_row if below else rows < eye_row - 0.5 * mesh.inter_ocular(lm)
    return int((changed & side).sum())


def test_outline_feather_narrows_the_fringe_below_the_eyes_only(monkeypatch, astronaut):
    img, lm = astronaut
    # Shape 0 (the patient's geometry): the hull is the same in both renders.
    monkeypatch.setattr(swap, "OUTLINE_FEATHER", None)
    plain = SwapRenderer(donor_seed=3, shape=0.0, donor_candidates=1)
    monkeypatch.setattr(swap, "OUTLINE_FEATHER", 0.03)
    narrow = SwapRenderer(donor_seed=3, shape=0.0, donor_candidates=1)
    assert plain.outline_feather is None and narrow.outline_feather == 0.03
    a, b = plain.render(img, lm), narrow.render(img, lm)
    hull = render_mesh.hull_mask(lm[:, :2], img.shape[:2]) > 0
    assert (b[hull] != img[hull]).any(axis=1).mean() > 0.99  # the face is still replaced
    below_a, below_b = _fringe(a, img, lm, True), _fringe(b, img, lm, True)
    above_a, above_b = _fringe(a, img, lm, False), _fringe(b, img, lm, False)
    assert below_b < 0.5 * below_a
    assert above_b == pytest.approx(above_a, rel=0.05)


def _far_outside(out: np.ndarray, img: np.ndarray, lm: np.ndarray, margin: float) -> int:
    """Changed pixels below the eye line more than ``margin`` px outside the landmark hull."""
    import cv2

    hull = render_mesh.hull_mask(lm[:, :2], img.shape[:2])
    dist = cv2.distanceTransform(cv2.bitwise_not(hull), cv2.DIST_L2, 3)
    changed = np.any(out != img, axis=2) & (dist > margin)
    eye_row = lm[list(mesh.OUTER_EYE_CORNERS), 1].max()
    return int(changed[int(np.ceil(eye_row)):].sum())


def test_outline_clip_keeps_a_wider_donor_face_inside_the_patients_outline(monkeypatch,
                                                                            astronaut):
    img, lm = astronaut
    # A narrow patient: the landmarks squeezed to 70 % of their width about the face's centre,
    # so the posed mean shape (the donor's outline) lies outside the patient's at the jaw.
    narrow = lm.copy()
    centre = narrow[:, 0].mean()
    narrow[:, 0] = centre + 0.7 * (narrow[:, 0] - centre)
    monkeypatch.setattr(swap, "OUTLINE_CLIP", None)
    union = SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)
    monkeypatch.setattr(swap, "OUTLINE_CLIP", 0.0)
    clipped = SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)
    assert union.outline_clip is None and clipped.outline_clip == 0.0
    a, b = union.render(img, narrow), clipped.render(img, narrow)
    hull = render_mesh.hull_mask(narrow[:, :2], img.shape[:2]) > 0
    assert (b[hull] != img[hull]).any(axis=1).mean() > 0.99  # the patient's face still replaced
    # Past the narrow fade (OUTLINE_FEATHER IODs) and a pixel of rounding, nothing below the
    # eyes changes with the clip; without it the donor's wider jaw is painted there.
    margin = swap.OUTLINE_FEATHER * mesh.inter_ocular(narrow) + 2.0
    assert _far_outside(a, img, narrow, margin) > 200
    assert _far_outside(b, img, narrow, margin) == 0
    # Above the eye line the face is as before (the forehead is not clipped).
    assert _fringe(b, img, narrow, False) == pytest.approx(_fringe(a, img, narrow, False),
                                                           rel=0.05)


def test_outline_clip_must_not_be_negative(monkeypatch):
    monkeypatch.setattr(swap, "OUTLINE_CLIP", -0.1)
    with pytest.raises(ValueError, match="OUTLINE_CLIP"):
        SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)


def test_outline_clip_is_on_by_default():
    assert swap.OUTLINE_CLIP == 0.0
    assert SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1).outline_clip == 0.0
