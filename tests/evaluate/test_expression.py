"""Known answers for the expression measures on synthetic face-mesh landmark arrays."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.evaluate.expression import (
    EXPRESSION_POINTS,
    MOUTH_CORNERS,
    expression_kept,
    pool,
    smile_index,
    video_expression,
)

LIP_CENTRE = (0, 13, 14, 17)  # upper and lower lip centres, outer and inner


def _neutral(seed: int = 0) -> np.ndarray:
    """A 478 x 3 mesh in pixels: random points on a face-sized area, with the points the
    measures rely on placed like a frontal face (eyes at y 200, nose tip at 270, mouth at 320)."""
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(150, 350, 478), rng.uniform(150, 400, 478),
                           rng.uniform(-20, 20, 478)])
    fixed = {33: (200, 200), 133: (235, 202), 362: (265, 202), 263: (300, 200),
             168: (250, 205), 6: (250, 225), 197: (250, 245), 195: (250, 258), 1: (250, 272),
             61: (222, 322), 291: (278, 322), 0: (250, 312), 17: (250, 335), 13: (250, 318),
             14: (250, 326)}
    for i, xy in fixed.items():
        pts[i, :2] = xy
    return pts


def _smile(neutral: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Corners out by 8 px and up by 6 px, other lip points and brows moved a little."""
    out = neutral.copy()
    out[MOUTH_CORNERS[0], :2] += amount * np.array([-8.0, -6.0])
    out[MOUTH_CORNERS[1], :2] += amount * np.array([8.0, -6.0])
    rng = np.random.default_rng(7)
    others = [i for i in EXPRESSION_POINTS if i not in MOUTH_CORNERS]
    out[others, :2] += amount * rng.normal(0, 2.0, size=(len(others), 2))
    return out


def _similar(points: np.ndarray, scale: float, angle_deg: float, shift: tuple[float, float]):
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out = points.copy()
    out[:, :2] = scale * points[:, :2] @ rot.T + np.asarray(shift)
    return out


def test_a_copy_keeps_everything():
    a = _neutral()
    b = _smile(a)
    s = expression_kept(a, b, a.copy(), b.copy())
    for value in (s.cosine, s.amplitude, s.projection, s.widening_kept, s.corner_lift_kept):
        assert value == pytest.approx(1.0, abs=1e-9)
    assert s.orig_widening > 0 and s.orig_corner_lift > 0


def test_an_erased_expression_scores_zero():
    a = _neutral()
    b = _smile(a)
    s = expression_kept(a, b, a.copy(), a.copy())
    assert s.cosine == 0.0 and s.amplitude == 0.0 and s.projection == 0.0
    assert s.widening_kept == pytest.approx(0.0, abs=1e-9)
    assert s.corner_lift_kept == pytest.approx(0.0, abs=1e-9)


def test_a_jittered_copy_of_the_neutral_is_near_zero():
    a = _neutral()
    b = _smile(a)
    rng = np.random.default_rng(3)
    jittered = a.copy()
    jittered[:, :2] += rng.normal(0, 1.0, size=(478, 2))
    s = expression_kept(a, b, a.copy(), jittered)
    assert abs(s.cosine) < 0.35
    assert abs(s.projection) < 0.35


def test_scaled_rotated_shifted_outputs_still_keep_everything():
    a = _neutral()
    b = _smile(a)
    out_a = _similar(a, 0.6, 12.0, (40, -15))
    out_b = _similar(b, 1.7, -20.0, (-80, 30))
    s = expression_kept(a, b, out_a, out_b)
    for value in (s.cosine, s.amplitude, s.projection, s.widening_kept, s.corner_lift_kept):
        assert value == pytest.approx(1.0, abs=1e-6)


def test_a_different_face_with_the_same_movement_keeps_it():
    """Identity (the donor's neutral shape) cancels: only the movement is compared."""
    a, b = _neutral(0), _smile(_neutral(0))
    donor = _neutral(5)
    s = expression_kept(a, b, donor, donor + (b - a))
    assert s.cosine == pytest.approx(1.0, abs=0.02)
    assert s.widening_kept == pytest.approx(1.0, abs=0.05)


def test_a_reversed_smile_is_negative():
    a = _neutral()
    b = _smile(a)
    s = expression_kept(a, b, b.copy(), a.copy())
    assert s.cosine < -0.99
    assert s.widening_kept == pytest.approx(-1.0, abs=1e-6)
    assert s.corner_lift_kept == pytest.approx(-1.0, abs=1e-6)


def test_half_the_movement_is_half_the_projection_and_amplitude():
    a = _neutral()
    s = expression_kept(a, _smile(a, 1.0), a.copy(), _smile(a, 0.5))
    assert s.cosine == pytest.approx(1.0, abs=1e-9)
    assert s.amplitude == pytest.approx(0.5, abs=1e-9)
    assert s.projection == pytest.approx(0.5, abs=1e-9)


def test_corner_lift_ignores_the_lip_centre():
    """Opening the mouth drops the lip centre; the corners measured against eyes and nose do
    not move, so no lift is read; a real corner lift is read whatever the lip centre does."""
    a = _neutral()
    opened = a.copy()
    opened[list(LIP_CENTRE), 1] += 15.0
    w0, e0 = smile_index(a[:, :2] / 100.0)
    w1, e1 = smile_index(opened[:, :2] / 100.0)
    assert (w1, e1) == (w0, e0)
    lifted = opened.copy()
    lifted[list(MOUTH_CORNERS), 1] -= 7.0
    assert smile_index(lifted[:, :2] / 100.0)[1] > e0


def test_no_change_in_the_original_gives_no_ratio():
    a = _neutral()
    s = expression_kept(a, a.copy(), a.copy(), _smile(a))
    assert s.cosine is None and s.widening_kept is None and s.corner_lift_kept is None


def test_bad_landmarks_are_named():
    a = _neutral()
    with pytest.raises(ValueError, match="out_b"):
        expression_kept(a, a, a, a[:68])
    nan = a.copy()
    nan[5, 0] = np.nan
    with pytest.raises(ValueError, match="orig_b"):
        expression_kept(a, nan, a, a)


def test_pool_uses_medians_and_pooled_smile_ratios():
    a = _neutral()
    b = _smile(a)
    kept = expression_kept(a, b, a.copy(), b.copy())
    erased = expression_kept(a, b, a.copy(), a.copy())
    summary = pool([kept, kept, erased])
    assert summary["n"] == 3
    assert summary["cosine"] == pytest.approx(1.0)
    assert summary["cosine_mean"] == pytest.approx(2 / 3)
    assert summary["widening_kept_pooled"] == pytest.approx(2 / 3)
    assert pool([])["cosine"] is None


def _clip(amounts: list[float], jitter_px: float = 0.0, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = _neutral()
    frames = []
    for t, amount in enumerate(amounts):
        f = _smile(base, amount)
        f[:, :2] += rng.normal(0, jitter_px, size=(478, 2)) if jitter_px else 0.0
        frames.append(_similar(f, 1.0 + 0.01 * t, 2.0 * np.sin(t), (t, -t)))
    return frames


def test_video_expression_follows_the_patient():
    amounts = [0, 0, 0.1, 0.6, 1.0, 0.8, 0.2, 0, 0, 0, 0.5, 0.9, 0.3, 0, 0]
    orig = _clip(amounts)
    out = [_similar(f, 0.5, 30.0, (10, 10)) for f in _clip(amounts, jitter_px=0.2, seed=4)]
    s = video_expression(orig, out)
    assert s.frames == len(amounts)
    assert s.cosine > 0.9 and s.frame_r > 0.95 and s.coordinate_r > 0.9


def test_video_expression_of_a_frozen_face_is_near_zero():
    amounts = [0, 0, 0.1, 0.6, 1.0, 0.8, 0.2, 0, 0, 0, 0.5, 0.9, 0.3, 0, 0]
    orig = _clip(amounts)
    frozen = _clip([0.0] * len(amounts), jitter_px=0.3, seed=9)
    s = video_expression(orig, frozen)
    assert abs(s.cosine) < 0.3 and abs(s.coordinate_r) < 0.3
    # Landmark noise has an amplitude of its own; the projection on the patient's movement
    # does not count it.
    assert abs(s.projection) < 0.1


def test_video_expression_skips_frames_missing_on_either_side():
    amounts = [0, 0.5, 1.0, 0.5, 0, 0, 0.7, 0]
    orig = _clip(amounts)
    out: list[np.ndarray | None] = list(_clip(amounts))
    out[2] = None
    s = video_expression(orig, out)
    assert s.frames == len(amounts) - 1
    assert s.cosine == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="frame counts"):
        video_expression(orig, out[:-1])
    assert video_expression(orig[:2], orig[:2]).cosine is None
