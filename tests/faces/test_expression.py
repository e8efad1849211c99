"""The expression model on skimage's astronaut: a synthetic smile comes out as a smile, another
identity's face shape does not, the per-track neutral follows the patient, and the swap's
geometry at shape 1.0 carries the smile but not the identity."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import mesh
from dicom_deid.faces.donors import load_model
from dicom_deid.faces.expression import (
    EXPRESSION_REGIONS,
    ExpressionModel,
    NeutralTracker,
    load_expression_model,
)
from dicom_deid.faces.swap import SwapRenderer, donor_identity_shape
from tests.faces import synth

CORNERS = (61, 291)


@pytest.fixture(scope="module")
def model() -> ExpressionModel:
    return load_expression_model()


@pytest.fixture(scope="module")
def neutral() -> np.ndarray:
    return synth.astronaut_landmarks().astype(np.float64)


def smile(landmarks: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """The face with its mouth corners pulled outward and up (a smile), the lips around them
    following with a smooth falloff; ``amount`` 1 is a clear smile (0.08 / 0.05 eye distances)."""
    out = landmarks.copy()
    iod = mesh.inter_ocular(landmarks)
    sigma = 0.18 * iod
    for corner, outward in ((CORNERS[0], -1.0), (CORNERS[1], 1.0)):
        d = np.linalg.norm(landmarks[:, :2] - landmarks[corner, :2], axis=1)
        w = np.exp(-(d / sigma) ** 2 / 2)
        out[:, 0] += amount * w * outward * 0.08 * iod
        out[:, 1] -= amount * w * 0.05 * iod
    return out


def identity_change(model: ExpressionModel, landmarks: np.ndarray) -> np.ndarray:
    """Another person's face shape: the astronaut moved 2.5 standard deviations along the three
    leading identity directions, in the canonical frame, and posed back."""
    canonical, pose = model.to_canonical(landmarks)
    var = np.load(model.path)["identity_variances"]
    shift = sum(2.5 * np.sqrt(var[k]) * model.identity_basis[k] for k in range(3))
    canonical[: mesh.MESH_POINTS] += shift.reshape(-1, 3)
    return model.from_canonical(canonical, pose)


def corner_motion(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How each mouth corner moved from ``a`` to ``b`` (canonical frame), (2, 2) x/y."""
    return (b - a)[list(CORNERS), :2]


def test_canonical_round_trip_and_pose_invariance(model, neutral):
    canonical, pose = model.to_canonical(neutral)
    assert np.allclose(model.from_canonical(canonical, pose), neutral, atol=1e-6)
    # Outer eye corners about 1 apart, as in the donor model's frame.
    assert mesh.inter_ocular(canonical) == pytest.approx(1.0, abs=0.1)
    moved = synth.warp_landmarks(neutral, [[0.6, -0.2, 40.0], [0.2, 0.6, -15.0]])
    again, _ = model.to_canonical(moved)
    assert np.abs(again - canonical).max() < 1e-6


def test_a_synthetic_smile_is_found_as_the_same_smile(model, neutral):
    base = model.expression(model.to_canonical(neutral)[0])
    smiling = model.expression(model.to_canonical(smile(neutral))[0])
    truth = corner_motion(model.to_canonical(neutral)[0], model.to_canonical(smile(neutral))[0])
    found = corner_motion(base, smiling)
    # Each corner goes outward (subject's right corner to the image left) and up, by at least
    # half of what the smile moved it.
    assert found[0, 0] < 0 < found[1, 0]
    assert (found[:, 1] < 0).all()
    cos = (found * truth).sum() / (np.linalg.norm(found) * np.linalg.norm(truth))
    assert cos > 0.75   # a hand-made smile, not a real one: the model finds most of it
    assert 0.5 < np.linalg.norm(found) / np.linalg.norm(truth) < 1.5


def test_another_identity_does_not_move_the_expression(model, neutral):
    other = identity_change(model, neutral)
    can_a, can_b = model.to_canonical(neutral)[0], model.to_canonical(other)[0]
    shape_change = np.linalg.norm(can_b - can_a, axis=1).mean()
    expr_change = np.linalg.norm(model.expression(can_b) - model.expression(can_a), axis=1).mean()
    smile_change = np.linalg.norm(
        model.expression(model.to_canonical(smile(neutral))[0]) - model.expression(can_a),
        axis=1).mean()
    assert shape_change > smile_change        # a larger change of the face than the smile ...
    assert expr_change < 0.2 * smile_change   # ... that hardly reaches the expression


def test_neutral_tracker_starts_as_the_single_image_fit_and_learns_the_neutral(model, neutral):
    rng = np.random.default_rng(3)
    iod = mesh.inter_ocular(neutral)
    tracker = NeutralTracker(model, refresh=1)
    first = model.to_canonical(smile(neutral))[0]
    assert np.allclose(tracker.update(first), model.expression(first), atol=1e-5)
    # Then the patient talks at rest for a while (landmark noise), and smiles again.
    for _ in range(30):
        frame = neutral + rng.normal(0, 0.004 * iod, neutral.shape)
        tracker.update(model.to_canonical(frame)[0])
    can_n = model.to_canonical(neutral)[0]
    can_s = model.to_canonical(smile(neutral))[0]
    d = tracker.update(can_s)
    # The astronaut smiles a little in her photo: her neutral is her shape with that fitted
    # expression taken out, and the displacement is measured from there.
    truth = (can_s - (can_n - model.expression(can_n)))[: mesh.MESH_POINTS].reshape(-1)
    got = d[: mesh.MESH_POINTS].reshape(-1)
    assert got @ truth / (np.linalg.norm(got) * np.linalg.norm(truth)) > 0.95
    assert np.linalg.norm(got) == pytest.approx(np.linalg.norm(truth), rel=0.2)


def test_swap_geometry_at_full_shape_smiles_and_drops_identity(neutral):
    renderer = SwapRenderer(donor_seed=1, shape=1.0)
    model = renderer.expression
    plain = renderer.geometry(neutral.astype(np.float32))
    smiled = renderer.geometry(smile(neutral).astype(np.float32))
    motion = corner_motion(model.to_canonical(plain)[0], model.to_canonical(smiled)[0])
    assert motion[0, 0] < 0 < motion[1, 0] and (motion[:, 1] < 0).all()
    other = renderer.geometry(identity_change(model, neutral).astype(np.float32))
    # Another face shape at rest renders as (nearly) the same geometry; the bare identity
    # change of the input is far larger.
    moved = np.linalg.norm(model.to_canonical(other)[0] - model.to_canonical(plain)[0],
                           axis=1)[: mesh.MESH_POINTS].mean()
    input_moved = np.linalg.norm(
        model.to_canonical(identity_change(model, neutral))[0] - model.to_canonical(neutral)[0],
        axis=1)[: mesh.MESH_POINTS].mean()
    assert moved < 0.15 * input_moved
    # Without the expression model (the former behaviour) the smile was erased.
    flat = SwapRenderer(donor_seed=1, shape=1.0, keep_expression=False)
    erased = corner_motion(
        model.to_canonical(flat.geometry(neutral.astype(np.float32)))[0],
        model.to_canonical(flat.geometry(smile(neutral).astype(np.float32)))[0])
    assert np.linalg.norm(erased) < 0.3 * np.linalg.norm(motion)


def test_swap_follows_the_track_neutral_in_video(neutral):
    renderer = SwapRenderer(donor_seed=1, shape=1.0)
    model = renderer.expression
    for _ in range(10):
        renderer.geometry(neutral.astype(np.float32), track_id=7)
    smiled = renderer.geometry(smile(neutral).astype(np.float32), track_id=7)
    rest = renderer.geometry(neutral.astype(np.float32), track_id=7)
    motion = corner_motion(model.to_canonical(rest)[0], model.to_canonical(smiled)[0])
    truth = corner_motion(model.to_canonical(neutral)[0],
                          model.to_canonical(smile(neutral))[0])
    assert (motion * truth).sum() / (np.linalg.norm(motion) * np.linalg.norm(truth)) > 0.95
    renderer.reset(7)
    assert 7 not in renderer._trackers


def test_a_broken_model_file_is_named(tmp_path):
    bad = tmp_path / "expression_model.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="expression_model.npz"):
        ExpressionModel(bad)
    np.savez(tmp_path / "partial.npz", mean_shape=np.zeros((478, 3)))
    with pytest.raises(ValueError, match="lacks"):
        ExpressionModel(tmp_path / "partial.npz")


def test_the_expression_model_shares_the_donor_models_frame(model):
    donor = load_model().canonical.astype(np.float64)
    err = np.linalg.norm(model.mean - donor, axis=1)[: mesh.MESH_POINTS].mean()
    assert err < 0.05   # eye distances: the same frame, a different set of identities


def test_each_donor_has_its_own_synthetic_face_shape(neutral):
    lm = neutral.astype(np.float32)
    shapes = {seed: SwapRenderer(donor_seed=seed, shape=1.0).geometry(lm) for seed in (1, 2)}
    again = SwapRenderer(donor_seed=1, shape=1.0).geometry(lm)
    assert np.array_equal(shapes[1], again)
    model = load_expression_model()
    a, b = (model.to_canonical(shapes[s])[0][: mesh.MESH_POINTS] for s in (1, 2))
    assert np.linalg.norm(a - b, axis=1).mean() > 0.01     # eye distances: visibly another face
    plain = SwapRenderer(donor_seed=1, shape=1.0, donor_shape=0.0).geometry(lm)
    assert not np.allclose(plain, shapes[1])


def test_the_donor_shape_leaves_the_face_outline_where_the_mean_shape_has_it(model):
    canonical = load_model().canonical.astype(np.float64)
    everywhere = donor_identity_shape(canonical, model, 5, 1.75) - canonical
    faded = donor_identity_shape(canonical, model, 5, 1.75, outline_reach=0.2) - canonical
    oval = list(mesh.FACE_OVAL)
    assert np.abs(faded[oval]).max() < 1e-9
    assert np.linalg.norm(everywhere[oval], axis=1).mean() > 0.01
    # Inside the face (the nose tip, far from the outline) the donor's shape is kept.
    assert np.allclose(faded[1], everywhere[1], atol=0.2 * np.abs(everywhere[1]).max())


def test_the_private_expression_keeps_the_smile_and_drops_movement_far_from_it(model, neutral):
    smiled, _ = model.to_canonical(smile(neutral))
    full = model.expression(smiled)
    kept = model.private_expression(smiled, reach=0.3)
    weights = model.region_weights(0.3)
    corners = list(CORNERS)
    assert np.allclose(kept[corners], full[corners])
    assert (weights[list(EXPRESSION_REGIONS)] == 1.0).all()
    # The forehead top and the jaw outline are the farthest from the regions: damped there.
    far = weights < 0.5
    assert far.sum() > 20 and weights.min() < 0.3
    assert np.allclose(kept[far], full[far] * weights[far, None])
    assert np.linalg.norm(kept[far]) < 0.5 * np.linalg.norm(full[far])
    # A soft threshold shrinks every coefficient: a smaller movement, in the same direction.
    shrunk = model.private_expression(smiled, threshold=0.3)
    cos = (shrunk * full).sum() / (np.linalg.norm(shrunk) * np.linalg.norm(full))
    assert np.linalg.norm(shrunk) < np.linalg.norm(full) and cos > 0.9
    assert np.allclose(model.private_expression(smiled), full)


@pytest.mark.parametrize("glide", [0, 5])
def test_the_track_neutral_glides_to_a_new_estimate(model, neutral, glide):
    # history 1: each refresh (every 5 frames) takes the latest estimate; the patient's face
    # changes shape at frame 5 (a new estimate), and the neutral follows at once (glide 0, as
    # before) or in equal steps over `glide` frames, without overshooting.
    tracker = NeutralTracker(model, history=1, refresh=5, glide=glide)
    before = model.to_canonical(neutral)[0]
    after = model.to_canonical(identity_change(model, neutral))[0]
    for _ in range(5):
        tracker.update(before)
    start = tracker.neutral.copy()
    target = after - model.expression(after)
    jump = np.linalg.norm(target - start)
    seen = []
    for _ in range(8):
        tracker.update(after)
        seen.append(tracker.neutral.copy())
    steps = [np.linalg.norm(b - a) for a, b in zip([start] + seen, seen, strict=False)]
    assert np.allclose(seen[-1], target, atol=1e-9)
    if glide == 0:
        assert steps[0] == pytest.approx(jump)
    else:
        assert max(steps) == pytest.approx(jump / glide, rel=1e-6)
        assert np.allclose(seen[glide - 1], target, atol=1e-9)


def _with_rest(model: ExpressionModel, landmarks: np.ndarray, coefficients: np.ndarray
               ) -> np.ndarray:
    """The face with its expression coefficients moved by ``coefficients`` (canonical frame)."""
    canonical, pose = model.to_canonical(landmarks)
    canonical += model.displacement(coefficients)
    return model.from_canonical(canonical, pose)


def test_the_committed_model_holds_resting_expression_statistics(model):
    assert model.rest_mean is not None and model.rest_covariance is not None
    cov = model.rest_covariance
    assert np.allclose(cov, cov.T, atol=1e-12)
    assert np.linalg.eigvalsh(cov).min() > 0
    # Neutral faces differ from each other by more than the expression basis' own variances
    # in most directions (lip and eye shape at rest), but not along the leading smile direction.
    ratio = np.diag(cov) / model.expression_variances
    assert np.median(ratio) > 1.0
    assert ratio[0] < 1.0


def test_two_peoples_resting_faces_come_out_as_the_studys_rest(model, neutral):
    """Two people whose resting faces differ along the neutral faces' distribution: with the
    same study rest, the replaced displacements are much closer than the patients' were."""
    rng = np.random.default_rng(3)
    chol = np.linalg.cholesky(model.rest_covariance)
    study = model.rest_sample(11)
    before, after = [], []
    for _ in range(6):
        a = _with_rest(model, neutral, chol @ rng.standard_normal(len(study)))
        b = _with_rest(model, neutral, chol @ rng.standard_normal(len(study)))
        da = model.expression(model.to_canonical(a)[0])
        db = model.expression(model.to_canonical(b)[0])
        before.append(np.linalg.norm(da - db))
        after.append(np.linalg.norm(model.rest_replaced(da, study)
                                    - model.rest_replaced(db, study)))
    assert np.mean(after) < 0.6 * np.mean(before)


def test_a_smile_survives_the_rest_replacement(model, neutral):
    d_n = model.expression(model.to_canonical(neutral)[0])
    d_s = model.expression(model.to_canonical(smile(neutral))[0])
    study = model.rest_sample(5)
    kept = model.rest_replaced(d_s, study) - model.rest_replaced(d_n, study)
    moved = (d_s - d_n)[list(CORNERS), :2].reshape(-1)
    got = kept[list(CORNERS), :2].reshape(-1)
    cosine = float(moved @ got / (np.linalg.norm(moved) * np.linalg.norm(got)))
    assert cosine > 0.8
    assert np.linalg.norm(got) > 0.4 * np.linalg.norm(moved)


def test_the_study_rest_is_drawn_from_the_seed(model):
    assert np.array_equal(model.rest_sample(4), model.rest_sample(4))
    assert not np.allclose(model.rest_sample(4), model.rest_sample(5))
    assert np.array_equal(model.rest_sample(None), model.rest_mean)
    # Across many studies the draws have the neutral faces' spread.
    draws = np.stack([model.rest_sample(s) for s in range(400)])
    sd = np.sqrt(np.diag(model.rest_covariance))
    assert np.allclose(draws.std(axis=0) / sd, 1.0, atol=0.2)


def test_a_model_without_rest_statistics_says_so(tmp_path, model):
    with np.load(model.path) as data:
        fields = {k: data[k] for k in data.files if not k.startswith("rest_")}
    np.savez(tmp_path / "old.npz", **fields)
    old = ExpressionModel(tmp_path / "old.npz")
    assert old.rest_mean is None
    with pytest.raises(ValueError, match="resting-expression"):
        old.rest_replaced(np.zeros((mesh.LANDMARK_COUNT, 3)), np.zeros(len(old.expression_variances)))


def test_a_rest_judged_on_given_coefficients_is_one_offset_for_every_frame(model, neutral):
    """In video the rest is judged on the track's median fit (``own``): every frame gets the
    same correction, so the frame-to-frame movement is kept whole; judged on each frame's own
    coefficients, a smile is partly taken for rest."""
    d_n = model.expression(model.to_canonical(neutral)[0])
    d_s = model.expression(model.to_canonical(smile(neutral))[0])
    study = model.rest_sample(9)
    own = model.coefficients(model.to_canonical(neutral)[0])[1]
    fixed = [model.rest_replaced(d, study, 3.0, own=own) - d for d in (d_n, d_s)]
    assert np.allclose(fixed[0], fixed[1])
    per_frame = [model.rest_replaced(d, study, 3.0) - d for d in (d_n, d_s)]
    assert not np.allclose(per_frame[0], per_frame[1], atol=1e-4)
    # On the image itself, judging on its own fit is the single-image behaviour.
    assert np.allclose(model.rest_replaced(d_n, study, 3.0, own=own), per_frame[0] + d_n,
                       atol=1e-6)


def _expression_points_change(model, a, b, scale):
    idx = list(EXPRESSION_REGIONS)
    return (model.expression(b, scale) - model.expression(a, scale))[idx, :2].ravel()


def test_a_narrower_identity_prior_gives_the_expression_more_of_a_smile(model, neutral):
    can_a = model.to_canonical(neutral)[0]
    can_b = model.to_canonical(smile(neutral))[0]
    truth = (can_b - can_a)[list(EXPRESSION_REGIONS), :2].ravel()
    cosines, identity_sizes = [], []
    for scale in (1.0, 0.1, 0.01):
        found = _expression_points_change(model, can_a, can_b, scale)
        cosines.append(found @ truth / (np.linalg.norm(found) * np.linalg.norm(truth)))
        identity_sizes.append(np.linalg.norm(model.coefficients(can_b, scale)[0]))
    # The identity basis takes less of the face and the smile comes out closer to itself.
    assert identity_sizes[0] > identity_sizes[1] > identity_sizes[2]
    assert cosines[0] < cosines[1] < cosines[2]
    # Scale 1 is the model as built, bit for bit.
    assert np.array_equal(model.expression(can_b, 1.0), model.expression(can_b))
    with pytest.raises(ValueError, match="identity_scale"):
        model.expression(can_b, 0.0)


def test_swap_reads_the_identity_prior_when_made(neutral, monkeypatch):
    from dicom_deid.faces import swap

    monkeypatch.setattr(swap, "EXPRESSION_IDENTITY_PRIOR", 0.1)
    narrow = SwapRenderer(donor_seed=4, shape=1.0, donor_candidates=1)
    monkeypatch.setattr(swap, "EXPRESSION_IDENTITY_PRIOR", 1.0)
    wide = SwapRenderer(donor_seed=4, shape=1.0, donor_candidates=1)
    lm = smile(neutral).astype(np.float32)
    assert narrow.identity_prior == 0.1 and narrow._tracker(0).identity_scale == 0.1
    # Still image (track 0) and the single-image fit (no track) both follow the setting.
    for track in (0, None):
        assert not np.allclose(narrow.geometry(lm, track), wide.geometry(lm, track), atol=1e-3)
    monkeypatch.setattr(swap, "EXPRESSION_IDENTITY_PRIOR", -1.0)
    with pytest.raises(ValueError, match="EXPRESSION_IDENTITY_PRIOR"):
        SwapRenderer(donor_seed=4, shape=1.0, donor_candidates=1)
