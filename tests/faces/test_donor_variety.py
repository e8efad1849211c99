"""Donor variety knobs: some of the donor's own rim colour kept, and a per-study skin tone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dicom_deid.faces import donor_texture, render_mesh
from dicom_deid.faces.donors import load_model
from dicom_deid.faces.swap import TONE_CHROMA_PER_L, SwapRenderer, donor_tone, donor_tone_locus
from tests.faces import synth


def _cheek_lab(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Mean CIELAB of two small cheek patches (landmarks 50 and 280)."""
    cheek = np.zeros(rgb.shape[:2], bool)
    for idx in (50, 280):
        x, y = lm[idx, :2].astype(int)
        cheek[y - 4:y + 5, x - 4:x + 5] = True
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[cheek].mean(axis=0)


def test_keep_own_brings_back_part_of_the_donors_rim_colour_and_nothing_else():
    model = load_model()
    tex = model.mean_texture.copy()
    keep_low, keep_detail, inner = donor_texture.clean_weights(model.layout)
    rim = model.layout.face_mask & (keep_low < 0.05) & (keep_detail < 0.05)
    # A broad dark band along the outline (hair shadow), smooth enough to survive OWN_SIGMA.
    tex[rim] = [60.0, 45.0, 40.0]
    clean = donor_texture.clean_texture(tex, model.mean_texture, model.layout)
    assert np.array_equal(clean, donor_texture.clean_texture(tex, model.mean_texture,
                                                             model.layout, 0.0))
    half = donor_texture.clean_texture(tex, model.mean_texture, model.layout, 0.5)
    full = donor_texture.clean_texture(tex, model.mean_texture, model.layout, 1.0)
    dark = [clean[rim].mean(), half[rim].mean(), full[rim].mean()]
    # Darker the more of the donor's own colour is kept, by about half at 0.5.
    assert dark[0] > dark[1] > dark[2]
    assert (dark[0] - dark[1]) == pytest.approx(0.5 * (dark[0] - dark[2]), rel=0.05)
    # The inner face (eyes, nose, mouth, cheeks) is the donor's either way.
    core = model.layout.face_mask & (keep_low > 0.99) & (keep_detail > 0.99)
    assert np.abs(full[core] - clean[core]).max() < 0.5
    with pytest.raises(ValueError):
        donor_texture.clean_texture(tex, model.mean_texture, model.layout, 1.5)


def test_tone_is_the_same_for_a_study_differs_between_studies_and_stays_in_range():
    amounts = (5.0, 3.0, 4.0)
    assert donor_tone(1234, amounts) == donor_tone(1234, amounts)
    tones = np.array([donor_tone(seed, amounts) for seed in range(200)])
    assert len({tuple(t) for t in tones}) == 200
    assert np.all(np.abs(tones) <= amounts)
    # Spread over the range, both signs, not a constant offset.
    assert np.all(tones.std(axis=0) > 0.4 * np.array(amounts))
    assert np.all(tones.min(axis=0) < 0) and np.all(tones.max(axis=0) > 0)
    assert donor_tone(1234, (0.0, 0.0, 0.0)) is None


def test_colour_match_adds_the_offset_in_lab():
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal((170, 130, 110), 6, (64, 64, 3)), 0, 255).astype(np.uint8)
    rendered = render_mesh.to_lab(np.full((64, 64, 3), (150, 120, 105), np.float32))
    region = np.full((64, 64), 255, np.uint8)
    plain = render_mesh.match_colour_lab(rendered, frame, region, None)
    shifted = render_mesh.match_colour_lab(rendered, frame, region, None, offset=(4.0, -2.0, 3.0))

    def lab(rgb):
        return cv2.cvtColor(rgb / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(axis=0)

    assert lab(shifted) - lab(plain) == pytest.approx([4.0, -2.0, 3.0], abs=0.25)


def test_the_renderer_shifts_the_face_by_its_studys_tone():
    img = np.ascontiguousarray(synth.astronaut())
    lm = synth.astronaut_landmarks().astype(np.float32)
    plain = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1, tone_range=(0.0, 0.0, 0.0))
    toned = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1, tone_range=(6.0, 3.0, 4.0))
    again = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1, tone_range=(6.0, 3.0, 4.0))
    other = SwapRenderer(donor_seed=6, shape=1.0, donor_candidates=1, tone_range=(6.0, 3.0, 4.0))
    assert plain.tone is None and toned.tone == again.tone != other.tone
    a, b = plain.render(img, lm), toned.render(img, lm)
    assert np.array_equal(b, again.render(img, lm))
    # On the cheeks (inside the face, away from eyes and mouth) the mean LAB moves by the tone.
    assert _cheek_lab(b, lm) - _cheek_lab(a, lm) == pytest.approx(np.array(toned.tone), abs=1.0)
    with pytest.raises(ValueError, match="tone_range"):
        SwapRenderer(donor_seed=5, tone_range=(1.0, -1.0, 0.0))


def test_tone_along_the_locus_is_one_number_per_study_with_chroma_following_lightness():
    assert donor_tone_locus(77, 0.0) is None
    assert donor_tone_locus(77, 8.0) == donor_tone_locus(77, 8.0)
    moves = np.array([donor_tone_locus(seed, 8.0) for seed in range(200)])
    assert np.all(np.abs(moves[:, 0]) <= 8.0) and moves[:, 0].std() > 3.0
    assert moves[:, 0].min() < -6.0 and moves[:, 0].max() > 6.0
    # Darker (negative L shift) is more saturated, lighter less, in proportion.
    assert moves[:, 1] == pytest.approx(1.0 - TONE_CHROMA_PER_L * moves[:, 0])


def test_colour_match_scales_chroma_and_keeps_the_hue():
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal((170, 130, 110), 6, (64, 64, 3)), 0, 255).astype(np.uint8)
    rendered = render_mesh.to_lab(np.full((64, 64, 3), (150, 120, 105), np.float32))
    region = np.full((64, 64), 255, np.uint8)
    plain = render_mesh.match_colour_lab(rendered, frame, region, None)
    richer = render_mesh.match_colour_lab(rendered, frame, region, None, offset=(-6.0, 0, 0),
                                          chroma=1.15)

    def lab(rgb):
        return cv2.cvtColor(rgb / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(axis=0)

    p, r = lab(plain), lab(richer)
    assert r[0] - p[0] == pytest.approx(-6.0, abs=0.3)
    assert np.hypot(*r[1:]) / np.hypot(*p[1:]) == pytest.approx(1.15, abs=0.02)
    assert np.arctan2(r[2], r[1]) == pytest.approx(np.arctan2(p[2], p[1]), abs=0.02)


def test_the_renderer_moves_the_face_along_the_locus_and_leaves_it_alone_when_off():
    img = np.ascontiguousarray(synth.astronaut())
    lm = synth.astronaut_landmarks().astype(np.float32)
    plain = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1, tone_locus=0.0)
    moved = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1, tone_locus=10.0)
    assert plain.tone is None and plain.tone_chroma == 1.0
    light, gain = donor_tone_locus(5, 10.0)
    assert moved.tone == (light, 0.0, 0.0) and moved.tone_chroma == gain
    a, b = plain.render(img, lm), moved.render(img, lm)
    la, lb = _cheek_lab(a, lm), _cheek_lab(b, lm)
    assert lb[0] - la[0] == pytest.approx(light, abs=1.0)
    assert np.arctan2(lb[2], lb[1]) == pytest.approx(np.arctan2(la[2], la[1]), abs=0.1)
    with pytest.raises(ValueError, match="tone_locus"):
        SwapRenderer(donor_seed=5, tone_locus=-1.0)


def test_donor_constants_are_read_when_a_renderer_is_made(monkeypatch):
    from dicom_deid.faces import swap

    before = SwapRenderer(donor_seed=5, shape=1.0)
    assert before.candidates == swap.DONOR_CANDIDATES
    assert before.shading_sigma == swap.SHADING_SIGMA
    monkeypatch.setattr(swap, "DONOR_CANDIDATES", 3)
    monkeypatch.setattr(swap, "DONOR_MIN_DISTANCE", 4.0)
    monkeypatch.setattr(swap, "SHADING_SIGMA", 0.6)
    monkeypatch.setattr(swap, "DONOR_SHAPE_SPREAD", 3.0)
    after = SwapRenderer(donor_seed=5, shape=1.0)
    assert (after.candidates, after.min_distance, after.shading_sigma) == (3, 4.0, 0.6)
    # The donor's synthetic shape moves away from the mean by the spread (3.0 vs 1.75 SD).
    mean = after.model.canonical.astype(np.float64)
    ratio = (np.abs(after.identity_shape - mean).mean()
             / np.abs(before.identity_shape - mean).mean())
    assert ratio == pytest.approx(3.0 / 1.75, rel=0.01)
    # Arguments still win over the constants.
    assert SwapRenderer(donor_seed=5, donor_candidates=1, shading_sigma=0.0).candidates == 1
