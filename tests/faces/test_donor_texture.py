"""The donor texture's rim and forehead are cleaned; the colour match ignores hair and beard."""

from __future__ import annotations

import cv2
import numpy as np

from dicom_deid.faces import donor_texture, render_mesh, swap
from dicom_deid.faces.donors import load_model


def _streaked(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean texture with dark vertical streaks over the whole face, and the weights."""
    tex = model.mean_texture.copy()
    cols = np.arange(model.size)
    streaks = (cols % 6 < 2)
    tex[:, streaks] *= 0.6
    keep_low, keep_detail, _ = donor_texture.clean_weights(model.layout)
    return tex, keep_low, keep_detail


def _streak_contrast(tex: np.ndarray, where: np.ndarray) -> float:
    """Mean absolute difference between neighbouring columns (the streaks' signature)."""
    grey = tex.mean(axis=2)
    diff = np.abs(np.diff(grey, axis=1))
    return float(diff[where[:, 1:]].mean())


def test_streaks_leave_the_rim_and_forehead_and_stay_on_the_cheeks():
    model = load_model()
    tex, keep_low, keep_detail = _streaked(model)
    out = donor_texture.clean_texture(tex, model.mean_texture, model.layout)
    face = model.layout.face_mask
    cleaned = face & (keep_detail < 0.1)          # rim and forehead
    kept = face & (keep_detail > 0.95)            # inner face: eyes, nose, cheeks, mouth
    assert cleaned.sum() > 1000 and kept.sum() > 1000
    before = _streak_contrast(tex, cleaned)
    assert before > 10.0
    # Gone where cleaned (down to the mean texture's own detail), untouched in the inner face.
    assert _streak_contrast(out, cleaned) < 0.2 * before
    assert _streak_contrast(out, kept) > 0.8 * _streak_contrast(tex, kept)
    assert np.abs(out[kept] - tex[kept]).mean() < 3.0


def test_the_rim_takes_the_inner_skin_colour_not_the_hair_at_the_outline():
    model = load_model()
    tex = model.mean_texture.copy()
    keep_low, _, inner = donor_texture.clean_weights(model.layout)
    rim = model.layout.face_mask & (keep_low < 0.05)
    tex[rim] = [40.0, 30.0, 25.0]                  # dark hair along the outline
    out = donor_texture.clean_texture(tex, model.mean_texture, model.layout)
    skin = tex[inner].mean(axis=0)
    rim_colour = out[rim].mean(axis=0)
    # The inner skin, shaded darker toward the outline as a face turning from the light is
    # (RIM_SHADE), never the hair and never lighter than the skin (a halo).
    assert np.all(rim_colour >= donor_texture.RIM_SHADE[0] * skin - 3.0)
    assert np.all(rim_colour <= skin + 3.0)
    assert np.abs(tex[rim].mean(axis=0) - skin).max() > 80.0


def test_colour_match_ignores_dark_hair_inside_the_face_region():
    rng = np.random.default_rng(3)
    size = 80
    src_rgb = np.clip(rng.normal(150, 6, (size, size, 3)), 0, 255).astype(np.float32)
    src_rgb[..., 1] -= 30
    src = render_mesh.to_lab(src_rgb)
    frame = np.full((size, size, 3), (205, 160, 140), np.uint8)
    frame[:, :20] = (35, 25, 20)                  # hair over a quarter of the region
    region = np.full((size, size), 255, np.uint8)
    out = render_mesh.match_colour_lab(src, frame, region, shading_sigma=None)
    skin_lab = render_mesh.to_lab(frame[:, 20:]).reshape(-1, 3).mean(axis=0)
    out_lab = render_mesh.to_lab(out).reshape(-1, 3).mean(axis=0)
    # The hair would pull the match's mean lightness down by about a quarter of the way.
    assert abs(out_lab[0] - skin_lab[0]) < 2.0
    hairless = render_mesh.skin_pixels(cv2.cvtColor(frame, cv2.COLOR_RGB2LAB), region)
    assert not hairless[:, :20].any() and hairless[:, 20:].all()


def test_painted_whites_take_the_colour_of_a_warm_light():
    neutral = swap._tint(swap.WHITE_LIT_SKIN)
    assert np.allclose(neutral, 1.0)
    warm = swap._tint(np.array([230.0, 140.0, 70.0]))   # orange-lit skin (GRID)
    assert warm[0] > 1.1 and warm[2] < 0.9
    assert np.allclose(swap._tint(None), 1.0)
