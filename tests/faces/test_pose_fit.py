"""Swap geometry placement (swap.POSE_FIT, OUTLINE_KEEP): the donor's face placed over the
patient's whole face by a least-squares similarity adds none of the patient's shape, and lands
nearer the patient's landmarks than the placement on the rigid points alone."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import mesh, swap
from dicom_deid.faces.donors import load_model
from dicom_deid.faces.expression import load_expression_model
from dicom_deid.faces.swap import SwapRenderer, blend_toward_mean, fit_pose_all
from tests.faces import synth


def _nme(reference: np.ndarray, other: np.ndarray, points: np.ndarray) -> float:
    err = np.linalg.norm(reference[points, :2] - other[points, :2], axis=1).mean()
    return float(100.0 * err / mesh.inter_ocular(reference))


def _shape_points() -> np.ndarray:
    """Mesh points that are neither aperture contours nor irises (those keep the patient's)."""
    kept = {i for upper, lower in mesh.APERTURES for i in upper[1:-1] + lower[1:-1]}
    return np.array([i for i in range(mesh.MESH_POINTS) if i not in kept])


@pytest.fixture(scope="module")
def big_face():
    """The astronaut's landmarks with everything but the rigid points (eyes, nose) pushed 15 %
    away from the face centre: a larger face around the same eyes and nose."""
    model = load_expression_model()
    lm = synth.astronaut_landmarks().astype(np.float64)
    canon, pose = model.to_canonical(lm)
    centre = canon[: mesh.MESH_POINTS].mean(axis=0)
    moved = np.setdiff1d(np.arange(mesh.LANDMARK_COUNT), model.rigid)
    canon[moved] = centre + (canon[moved] - centre) * 1.15
    return model.from_canonical(canon, pose).astype(np.float32), model


def test_fit_pose_all_undoes_a_similarity():
    rng = np.random.default_rng(3)
    patient = rng.normal(size=(mesh.LANDMARK_COUNT, 3))
    angle = 0.2
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    target = 0.7 * patient @ rot.T + np.array([0.3, -0.1, 0.05])
    assert np.allclose(fit_pose_all(target, patient), patient, atol=1e-9)


def test_all_point_fit_lands_nearer_and_keeps_the_donor_shape(big_face):
    lm, model = big_face
    canonical = load_model().canonical
    rigid = blend_toward_mean(lm, canonical, 1.0, model, pose_fit="rigid")
    whole = blend_toward_mean(lm, canonical, 1.0, model, pose_fit="all")
    pts = _shape_points()
    # The rigid placement leaves the larger outline off by the size difference; the whole-face
    # placement splits it over all points.
    assert _nme(lm, whole, pts) < _nme(lm, rigid, pts) - 0.5
    # The same shape either way, up to a similarity: nothing of the patient's proportions added.
    fit = mesh.fit_similarity(rigid[pts], whole[pts])
    residual = np.linalg.norm(fit.apply(rigid[pts]) - whole[pts], axis=1).mean()
    assert residual / mesh.inter_ocular(whole) < 1e-3
    # And the placement did change: the whole face grew toward the patient's size.
    assert fit.scale > 1.02


def test_outline_keep_moves_only_the_outline(big_face):
    lm, model = big_face
    canonical = load_model().canonical
    base = blend_toward_mean(lm, canonical, 1.0, model, pose_fit="all")
    kept = blend_toward_mean(lm, canonical, 1.0, model, pose_fit="all", outline_keep=0.05)
    oval = np.array(mesh.FACE_OVAL)
    assert _nme(lm, kept, oval) < 0.05 < _nme(lm, base, oval)
    inner = np.array([1, 4, 6, 168, 33, 263, 133, 362])  # nose and eye corners
    assert _nme(base, kept, inner) < 1e-3


def test_renderer_takes_the_placement_when_made(monkeypatch, big_face):
    lm, _ = big_face
    whole = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1)
    monkeypatch.setattr(swap, "POSE_FIT", "rigid")
    rigid = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1)
    pts = _shape_points()
    assert whole.pose_fit == "all" and rigid.pose_fit == "rigid"
    assert _nme(lm, whole.geometry(lm), pts) < _nme(lm, rigid.geometry(lm), pts)
    monkeypatch.setattr(swap, "POSE_FIT", "everything")
    with pytest.raises(ValueError):
        SwapRenderer(donor_seed=5, shape=1.0)


def test_donor_shape_kept_near_the_features_only():
    from dicom_deid.faces.expression import EXPRESSION_REGIONS
    from dicom_deid.faces.swap import donor_identity_shape

    model = load_expression_model()
    canonical = load_model().canonical.astype(np.float64)
    everywhere = donor_identity_shape(canonical, model, 5, 1.75) - canonical
    near = donor_identity_shape(canonical, model, 5, 1.75, feature_reach=0.1) - canonical
    features = list(EXPRESSION_REGIONS)
    # On the lips, eyes and brows the donor's shape is whole: it drowns what the expression
    # fit carries of the patient's shape there.
    assert np.allclose(near[features], everywhere[features])
    # On the nose tip and mid-cheeks it is (nearly) gone: there it only moved the landmarks.
    far = [1, 4, 5, 50, 280]
    size = np.linalg.norm(everywhere[far], axis=1).mean()
    assert size > 0.005
    assert np.linalg.norm(near[far], axis=1).mean() < 0.1 * size


def test_renderer_takes_the_feature_reach_when_made(monkeypatch):
    lm = synth.astronaut_landmarks().astype(np.float32)
    whole = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1)
    monkeypatch.setattr(swap, "DONOR_FEATURE_REACH", 0.1)
    near = SwapRenderer(donor_seed=5, shape=1.0, donor_candidates=1)
    assert whole.feature_reach is None and near.feature_reach == 0.1
    nose = [1, 4, 5]
    canonical = near.model.canonical
    assert np.abs(near.identity_shape[nose] - canonical[nose]).max() < \
        np.abs(whole.identity_shape[nose] - canonical[nose]).max()
    assert not np.allclose(near.geometry(lm), whole.geometry(lm))


def test_aspect_takes_the_patients_proportion_within_its_bounds():
    rng = np.random.default_rng(7)
    donor = rng.normal(size=(mesh.LANDMARK_COUNT, 3))
    # The patient: the donor's face 12 % taller for its width, moved and scaled.
    patient = donor * np.array([1.0, 1.12, 1.0]) * 1.3 + np.array([0.2, 0.1, 0.0])
    pts = slice(0, mesh.MESH_POINTS)

    def proportion(points: np.ndarray) -> float:
        spread = points[pts, :2] - points[pts, :2].mean(axis=0)
        return float(np.sqrt((spread[:, 1] ** 2).mean() / (spread[:, 0] ** 2).mean()))

    same = fit_pose_all(donor, patient)
    bounded = fit_pose_all(donor, patient, aspect=1.03)
    free = fit_pose_all(donor, patient, aspect=2.0)
    assert proportion(same) == pytest.approx(proportion(donor), rel=2e-3)
    # Clipped: sqrt(height / width scale) at most 1.03, so the proportion moves by 1.03 ** 2.
    assert proportion(bounded) == pytest.approx(proportion(donor) * 1.03 ** 2, rel=2e-3)
    assert proportion(free) == pytest.approx(proportion(patient), rel=2e-3)
    err = [np.linalg.norm(x[pts] - patient[pts], axis=1).mean() for x in (same, bounded, free)]
    assert err[0] > err[1] > err[2]
    assert err[2] < 0.6 * err[0]
