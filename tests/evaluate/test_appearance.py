"""Known answers for the appearance measures on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("skimage")

from dicom_deid.evaluate.appearance import (  # noqa: E402
    boundary_contrast,
    box_change,
    flicker_ratio,
    replaced_region,
    skin_neck_delta_e,
    skin_regions,
)


def _textured(size: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth gradient with mild noise, like skin and background under soft light."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    base = 90 + 0.3 * xx + 0.2 * yy
    img = base[..., None] + rng.normal(0, 3, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _paste(img: np.ndarray, feather: float) -> np.ndarray:
    """The centre disc brightened by 50 levels; feather = width of the alpha ramp in px."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w / 2, yy - h / 2)
    alpha = np.clip((70 - r) / feather + 0.5, 0, 1) if feather > 0 else (r < 70).astype(float)
    out = img.astype(np.float64) + 50.0 * alpha[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def test_replaced_region_is_the_changed_disc():
    img = _textured()
    mask = replaced_region(img, _paste(img, 0))
    assert mask is not None
    disc = np.hypot(*(np.mgrid[0:240, 0:240] - 120)) < 70
    overlap = (mask & disc).sum() / (mask | disc).sum()
    assert overlap > 0.9


def test_nothing_replaced_gives_none():
    img = _textured()
    assert replaced_region(img, img.copy()) is None
    assert boundary_contrast(img, img.copy()) is None


def test_a_hard_seam_has_higher_contrast_than_a_blended_edge():
    img = _textured()
    hard = boundary_contrast(img, _paste(img, 0))
    soft = boundary_contrast(img, _paste(img, 40))
    assert hard is not None and soft is not None
    assert hard.ratio > 3.0
    assert soft.ratio < 1.6
    assert hard.ratio > 2 * soft.ratio
    # The original has no edge there.
    assert hard.ratio_original == pytest.approx(1.0, abs=0.3)


def _face_mesh(size: int = 300) -> np.ndarray:
    mesh = np.zeros((478, 3))
    mesh[:, :2] = size / 2
    for i, xy in {33: (100, 100), 263: (200, 100), 50: (115, 160), 280: (185, 160),
                  101: (125, 150), 330: (175, 150), 151: (150, 60), 152: (150, 220)}.items():
        mesh[i, :2] = xy
    return mesh


def test_skin_neck_colour_difference():
    img = np.full((300, 300, 3), (200, 150, 130), np.uint8)
    mesh = _face_mesh()
    regions = skin_regions(img.shape, mesh)
    assert regions is not None
    face, neck = regions
    assert face.any() and neck.any() and not (face & neck).any()
    assert neck[260, 150] and face[160, 115]
    assert skin_neck_delta_e(img, regions) == pytest.approx(0.0, abs=1e-6)
    greener = img.copy()
    greener[face] = (170, 160, 130)
    assert skin_neck_delta_e(greener, regions) > 8.0


def test_skin_regions_outside_the_frame_are_none():
    mesh = _face_mesh()
    assert skin_regions((240, 300, 3), mesh) is None     # the neck box leaves the frame


def test_flicker_ratio():
    a = np.zeros((50, 50, 3), np.uint8)
    b = a.copy()
    b[10:20, 10:20] = 100
    assert box_change(a, b, (0, 0, 50, 50)) == pytest.approx(100 * 100 / 2500, rel=0.02)
    assert box_change(a, b, (30, 30, 50, 50)) == 0.0
    assert box_change(a, b, (0, 0, 2, 2)) is None
    assert flicker_ratio([2.0, 2.0, None], [3.0, 3.0, 9.0]) == pytest.approx(1.5)
    assert flicker_ratio([0.0, 0.0], [1.0, 1.0]) is None
    assert flicker_ratio([], []) is None
