"""Lip thickness (faces/lips.py): the rendered lips take the patient's thickness within bounds
of the rendered shape's, and nothing but the lips and the skin just outside them moves."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import lips, mesh, swap
from dicom_deid.faces.donors import load_model
from dicom_deid.faces.swap import SwapRenderer
from tests.faces import synth


def _posed(canonical: np.ndarray, scale: float = 120.0, angle: float = 0.3) -> np.ndarray:
    """The canonical shape rotated in the image plane, scaled and moved into a frame."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    out = canonical.astype(np.float64).copy()
    out[:, :2] = out[:, :2] @ rot.T * scale + (200.0, 150.0)
    out[:, 2] *= scale
    return out


def _scaled_target(shape: np.ndarray, upper: float, lower: float) -> np.ndarray:
    """Landmarks whose lips are ``upper`` / ``lower`` times as thick as ``shape``'s, made by
    moving only the outer contours (the region's inner points follow in keep_lip_thickness)."""
    frame = lips._frame(shape)
    out = shape.copy()
    for outer, inner, factor in ((lips.UPPER_OUTER, mesh.INNER_LIPS_UPPER, upper),
                                 (lips.LOWER_OUTER, mesh.INNER_LIPS_LOWER, lower)):
        for o in outer[1:-1]:
            rel = shape[o, :2] - frame[0]
            h_i = lips._heights(shape, frame, inner, np.array([rel @ frame[1]]))[0]
            out[o, :2] += (factor - 1.0) * (rel @ frame[2] - h_i) * frame[2]
    return out


@pytest.fixture(scope="module")
def canonical() -> np.ndarray:
    return load_model().canonical.astype(np.float64)


def test_thickness_is_measured_per_lip_and_is_pose_and_scale_free(canonical):
    upper, lower = lips.thickness(canonical)
    # The mean shape: lower lip fuller than the upper one, both a fraction of the mouth width.
    assert 0.05 < upper < lower < 0.4
    posed = lips.thickness(_posed(canonical, 80.0, -0.5))
    assert posed == pytest.approx((upper, lower), rel=1e-6)
    thin = lips.thickness(_scaled_target(canonical, 0.5, 1.5))
    assert thin == pytest.approx((0.5 * upper, 1.5 * lower), rel=1e-6)


def test_the_lip_region_holds_the_outer_contours_and_not_the_inner_ones(canonical):
    upper, lower = lips.lip_region(canonical)
    assert set(lips.UPPER_OUTER[1:-1]) <= set(upper.tolist())
    assert set(lips.LOWER_OUTER[1:-1]) <= set(lower.tolist())
    assert not set(mesh.INNER_LIPS_UPPER) & set(upper.tolist())
    assert not set(mesh.INNER_LIPS_LOWER) & set(lower.tolist())
    # Points between the contours (the lips' own rings) move too, the eyes and nose tip never.
    assert {12, 11} <= set(upper.tolist()) and {15, 16} <= set(lower.tolist())
    assert not {1, 4, 33, 263, 152} & (set(upper.tolist()) | set(lower.tolist()))


@pytest.mark.parametrize("patient,expected", [
    ((0.6, 0.7), (0.8, 0.8)),      # thin lips: no thinner than the bounds allow
    ((0.9, 1.1), (0.9, 1.1)),      # within bounds: the patient's
    ((1.6, 1.3), (1.25, 1.25)),    # full lips: no fuller than the bounds allow
])
def test_each_lip_takes_the_patients_thickness_within_the_bounds(canonical, patient, expected):
    out = _posed(canonical)
    mean = np.array(lips.thickness(canonical))
    patient_lm = _posed(_scaled_target(canonical, *patient), 150.0, 0.1)
    before = out.copy()
    applied = lips.keep_lip_thickness(out, patient_lm, canonical, (0.8, 1.25))
    assert applied == pytest.approx(expected, abs=1e-6)
    assert np.array(lips.thickness(out)) == pytest.approx(mean * np.array(expected), rel=0.01)
    moved = np.linalg.norm(out[:, :2] - before[:, :2], axis=1) > 1e-6
    region = set(np.concatenate(lips.lip_region(canonical)).tolist())
    assert set(np.flatnonzero(moved).tolist()) <= region
    # The opening (inner contours) and the mouth corners stay where they were.
    fixed = list(mesh.INNER_LIPS_UPPER + mesh.INNER_LIPS_LOWER) + [61, 291]
    assert np.allclose(out[fixed], before[fixed])


def test_the_mean_shapes_own_thickness_leaves_it_unchanged(canonical):
    out = _posed(canonical)
    before = out.copy()
    assert lips.keep_lip_thickness(out, _posed(canonical, 60.0), canonical) == \
        pytest.approx((1.0, 1.0))
    assert np.allclose(out, before, atol=1e-6 * 120)


def test_the_lips_do_not_fold_over_the_skin_outside_them(canonical):
    for factor in (0.8, 1.25):
        out = _posed(canonical)
        lips.keep_lip_thickness(out, _posed(_scaled_target(canonical, 2.0 if factor > 1 else 0.1,
                                                           2.0 if factor > 1 else 0.1)),
                                canonical, (0.8, 1.25))
        # Column by column, the order from the inner contour outward is kept.
        frame = lips._frame(out)
        for ring in ((13, 12, 11, 0, 164), (14, 15, 16, 17, 18)):
            h = (out[list(ring), :2] - frame[0]) @ frame[2]
            assert np.all(np.abs(np.diff(h)) > 0) and len(set(np.sign(np.diff(h)))) == 1


def test_swap_renders_the_patients_lip_thickness_only_when_asked(monkeypatch):
    monkeypatch.setattr(swap, "LIP_PROFILE", "mean")
    img = np.ascontiguousarray(synth.astronaut())
    lm = synth.astronaut_landmarks().astype(np.float32)
    on = SwapRenderer(donor_seed=3, shape=1.0, lip_thickness=(0.8, 1.25), donor_candidates=1)
    off = SwapRenderer(donor_seed=3, shape=1.0, lip_thickness=None, donor_candidates=1)
    geo_on, geo_off = on.geometry(lm), off.geometry(lm)
    canonical = load_model().canonical.astype(np.float64)
    mean = np.array(lips.thickness(canonical))
    expected = np.clip(np.array(lips.thickness(lm)) / mean, 0.8, 1.25) * mean
    assert np.array(lips.thickness(geo_on)) == pytest.approx(expected, rel=0.1)
    assert np.array(lips.thickness(geo_off)) != pytest.approx(expected, rel=0.1)
    # Only the lip region differs between the two geometries.
    rest = np.setdiff1d(np.arange(len(lm)), np.concatenate(lips.lip_region(canonical)))
    assert np.allclose(geo_on[rest], geo_off[rest])
    assert img.shape[:2] == (512, 512) and on.render(img, lm).shape == img.shape
    with pytest.raises(ValueError, match="lip thickness"):
        SwapRenderer(donor_seed=3, shape=1.0, lip_thickness=(1.2, 1.5))


def _profiled(shape: np.ndarray, corner: float) -> np.ndarray:
    """``shape`` with each lip's thickness scaled along the mouth, 1 at the centre and
    ``corner`` at the corners (a smile stretches and thins the lips toward the corners)."""
    frame = lips._frame(shape)
    out = shape.copy()
    for outer, inner in ((lips.UPPER_OUTER, mesh.INNER_LIPS_UPPER),
                         (lips.LOWER_OUTER, mesh.INNER_LIPS_LOWER)):
        for o in outer[1:-1]:
            rel = shape[o, :2] - frame[0]
            u = rel @ frame[1]
            h_i = lips._heights(shape, frame, inner, np.array([u]))[0]
            factor = 1.0 + (corner - 1.0) * min(1.0, abs(u) / (frame[3] / 2.0))
            out[o, :2] += (factor - 1.0) * (rel @ frame[2] - h_i) * frame[2]
    return out


def _profile(points: np.ndarray) -> np.ndarray:
    """Both lips' thickness at their outer points, each over its own mean."""
    frame = lips._frame(points)
    parts = []
    for lip in lips.LIPS:
        u, t = lips._lip_heights(points, frame, *lip)
        parts.append(t[np.argsort(u)] / t.mean())
    return np.concatenate(parts)


@pytest.mark.parametrize("patient,expected", [((1.0, 1.0), (1.0, 1.0)),
                                              ((0.3, 0.3), (0.8, 0.8)),
                                              ((1.1, 0.9), (1.1, 0.9))])
def test_the_rendered_profile_is_kept_and_scaled_to_the_patients_thickness(
        canonical, patient, expected):
    reference = _posed(_profiled(canonical, 0.4))      # the expression fit's lips
    out = _posed(canonical)                            # after the mouth took its opening
    patient_lm = _posed(_scaled_target(reference, *patient), 150.0, 0.1)
    applied = lips.keep_lip_thickness(out, patient_lm, canonical, (0.8, 1.25), "rendered",
                                      reference)
    assert applied == pytest.approx(expected, rel=1e-3)
    assert np.array(lips.thickness(out)) == pytest.approx(
        np.array(lips.thickness(reference)) * np.array(expected), rel=0.02)
    # The profile along the mouth is the reference's, not the mean shape's.
    assert _profile(out) == pytest.approx(_profile(reference), abs=0.03)
    assert np.abs(_profile(canonical) - _profile(reference)).max() > 0.2
    # With the mean shape's profile (the behaviour before) the smile's thinning is gone.
    before = _posed(canonical)
    lips.keep_lip_thickness(before, patient_lm, canonical, (0.8, 1.25), "mean")
    assert _profile(before) == pytest.approx(_profile(canonical), abs=0.03)


def test_an_unknown_lip_profile_is_refused(canonical, monkeypatch):
    with pytest.raises(ValueError, match="profile"):
        lips.keep_lip_thickness(_posed(canonical), _posed(canonical), canonical, (0.8, 1.25),
                                "donor")
    monkeypatch.setattr(swap, "LIP_PROFILE", "donor")
    with pytest.raises(ValueError, match="LIP_PROFILE"):
        SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)


def test_swap_lips_follow_the_expression_fit_before_the_mouth_opening(monkeypatch):
    """The astronaut smiles with her mouth open: the rendered lips take the profile the
    expression fit gave them, scaled, and the openings are the patient's as before."""
    lm = synth.astronaut_landmarks().astype(np.float32)
    monkeypatch.setattr(swap, "LIP_PROFILE", "rendered")
    r = SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)
    fitted = swap.blend_toward_mean(lm, r.identity_shape, 1.0, r.expression, None, r.private,
                                    r.pose_fit, r.outline_keep, r.aspect, openings=False)
    opened = fitted.copy()
    swap.keep_openings(opened, lm)
    assert np.allclose(opened, swap.blend_toward_mean(
        lm, r.identity_shape, 1.0, r.expression, None, r.private, r.pose_fit, r.outline_keep,
        r.aspect))
    geo = r.geometry(lm)
    assert _profile(geo) == pytest.approx(_profile(fitted), abs=0.05)
    low, high = r.lip_thickness
    ratio = np.array(lips.thickness(geo)) / np.array(lips.thickness(fitted))
    assert np.all(ratio > low - 0.02) and np.all(ratio < high + 0.02)
    # The inner contours (the opening) are the patient's, as with the mean profile.
    monkeypatch.setattr(swap, "LIP_PROFILE", "mean")
    geo_mean = SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1).geometry(lm)
    inner = list(mesh.INNER_LIPS_UPPER + mesh.INNER_LIPS_LOWER)
    assert np.allclose(geo[inner], geo_mean[inner], atol=1e-3)
