"""Swap's donor rejection: a study's donor is the first of its keyed candidates whose render
stays far enough from the patient in the donor model's appearance embedding; deterministic for
a key and a content, and kept for the study's later renderers."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import swap
from dicom_deid.faces.donors import candidate_seed, load_model, settle_candidate
from dicom_deid.faces.swap import SwapRenderer
from tests.faces import synth

SEED = 11


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(synth.astronaut()), synth.astronaut_landmarks().astype(np.float32)


@pytest.fixture(autouse=True)
def fresh_studies():
    # Each test starts as a new process would: no study has settled on a donor yet.
    swap._SETTLED.clear()
    yield
    swap._SETTLED.clear()


def test_candidate_seeds_start_with_the_studys_own_and_differ():
    seeds = [candidate_seed(SEED, k) for k in range(8)]
    assert seeds[0] == SEED
    assert len(set(seeds)) == 8
    assert seeds == [candidate_seed(SEED, k) for k in range(8)]
    assert candidate_seed(SEED + 1, 1) != seeds[1]


def test_the_embedding_gives_back_a_donors_own_coefficients():
    model = load_model()
    donor = model.sample(SEED)
    rng = np.random.default_rng([SEED, 0x646F6E6F72])   # as DonorModel.sample draws them
    z = rng.standard_normal(len(model.variances)) * model.spread
    picture = np.clip(np.rint(donor.texture), 0, 255).astype(np.uint8)
    at = np.concatenate([model.layout.uv, np.zeros((len(model.layout.uv), 1), np.float32)], 1)
    got = model.embed(picture, at)
    assert got.shape == z.shape
    assert float(got @ z / np.linalg.norm(got) / np.linalg.norm(z)) > 0.95
    assert np.linalg.norm(got - z) < 0.3 * np.linalg.norm(z)


def test_a_candidate_rendered_too_close_to_the_patient_is_turned_down(astronaut):
    img, lm = astronaut
    # The "patient" is the study's first candidate itself: rendered onto her face, it comes
    # out nearly as it went in, so it must be rejected for the next candidate.
    plain = SwapRenderer(donor_seed=SEED, shape=1.0, donor_candidates=1)
    patient = plain.render(img, lm)
    model = load_model()
    first_out = plain.render(patient, lm)
    first = float(np.linalg.norm(model.embed(first_out, plain.geometry(lm))
                                 - model.embed(patient, lm)))
    limit = first + 0.5
    swap._SETTLED.clear()
    chosen = SwapRenderer(donor_seed=SEED, shape=1.0, donor_min_distance=limit)
    chosen.render(patient, lm)
    assert chosen.donor.label != f"pca:{SEED}"
    assert chosen.donor.label in {f"pca:{candidate_seed(SEED, k)}" for k in range(1, 8)}
    assert chosen.donor_distance > first
    # Without a margin the study's own first candidate stays (the behaviour before rejection).
    swap._SETTLED.clear()
    kept = SwapRenderer(donor_seed=SEED, shape=1.0, donor_min_distance=0.0)
    kept.render(patient, lm)
    assert kept.donor.label == f"pca:{SEED}"


def test_rejection_is_deterministic_and_the_study_keeps_its_donor(astronaut):
    img, lm = astronaut
    a = SwapRenderer(donor_seed=SEED, shape=1.0, donor_min_distance=50.0)
    out_a = a.render(img, lm)
    # Nothing reaches 50: the fallback (DONOR_FALLBACK) picks one of the 8 candidates.
    assert a.donor_distance is not None and a.donor_distance < 50.0
    swap._SETTLED.clear()
    b = SwapRenderer(donor_seed=SEED, shape=1.0, donor_min_distance=50.0)
    out_b = b.render(img, lm)
    assert a.donor.label == b.donor.label
    assert np.array_equal(out_a, out_b)
    # Another instance of the same study, another picture: the donor its first face settled on.
    other = np.clip(img.astype(np.int16) * 3 // 4 + 30, 0, 255).astype(np.uint8)
    c = SwapRenderer(donor_seed=SEED, shape=1.0, donor_min_distance=50.0)
    c.render(other, lm)
    assert c.donor.label == a.donor.label
    # A study with one candidate never rejects.
    single = SwapRenderer(donor_seed=SEED + 1, shape=1.0, donor_candidates=1,
                          donor_min_distance=50.0)
    single.render(img, lm)
    assert single.donor.label == f"pca:{SEED + 1}"


def _lazy(values):
    asked = []

    def distance(i):
        asked.append(i)
        return values[i]
    return distance, asked


def test_settle_candidate_takes_the_first_far_enough_and_asks_no_further():
    distance, asked = _lazy([1.0, 3.0, 6.0, 9.0])
    assert settle_candidate(distance, 4, 5.0) == (2, 6.0)
    assert asked == [0, 1, 2]


def test_settle_candidate_fallbacks_when_none_is_far_enough():
    values = [2.0, 4.0, 3.0]
    assert settle_candidate(_lazy(values)[0], 3, 5.0, "farthest") == (1, 4.0)
    assert settle_candidate(_lazy(values)[0], 3, 5.0, "first") == (0, 2.0)
    with pytest.raises(ValueError):
        settle_candidate(_lazy(values)[0], 3, 5.0, "nearest")
    with pytest.raises(ValueError):
        settle_candidate(_lazy(values)[0], 0, 5.0)


def test_reject_closest_turns_down_the_studys_nearest_candidates_only():
    # Candidate 0 is among the two nearest: turned down; 1 is the first of the rest.
    distance, asked = _lazy([1.0, 5.0, 0.5, 3.0])
    assert settle_candidate(distance, 4, np.inf, "rank", 2) == (1, 5.0)
    assert asked == [0, 1, 2, 3]
    # The study's own candidate stays whenever it is not among the nearest, however near.
    assert settle_candidate(_lazy([1.0, 0.9, 0.5, 3.0])[0], 4, np.inf, "rank", 2) == (0, 1.0)
    # Ties keep seed order, so the choice depends on the distances alone.
    assert settle_candidate(_lazy([2.0, 2.0, 2.0])[0], 3, np.inf, "rank", 1) == (1, 2.0)
    # With a bar, the rank is only the fallback: a candidate past the bar is kept first.
    assert settle_candidate(_lazy([1.0, 6.0, 0.5, 3.0])[0], 4, 5.0, "rank", 3) == (1, 6.0)
    assert settle_candidate(_lazy([1.0, 4.0, 0.5, 3.0])[0], 4, 5.0, "rank", 3) == (1, 4.0)
    with pytest.raises(ValueError):
        settle_candidate(_lazy([1.0, 2.0])[0], 2, 5.0, "rank", 2)


def _toy_choices(min_distance, fallback="farthest", reject=0, studies=3000, seed=3):
    """Toy embedding: each study's patient a random point, its 8 candidates standard normal
    draws in 20 dimensions; the chosen candidates' mean component along the patient's
    direction (0: no pull; negative: pushed away from the patient, the same way for every
    study of that patient)."""
    rng = np.random.default_rng(seed)
    along = []
    for _ in range(studies):
        patient = rng.standard_normal(20)
        cands = rng.standard_normal((8, 20))
        dist = np.linalg.norm(cands - patient, axis=1)
        index, _ = settle_candidate(lambda i, d=dist: float(d[i]), 8, min_distance, fallback,
                                    reject)
        along.append(float(cands[index] @ patient / np.linalg.norm(patient)))
    return float(np.mean(along))


def test_on_a_toy_embedding_a_bar_pulls_donors_away_from_the_patient_and_the_rank_less():
    # The hypothesis in miniature: a bar on the distance from the patient (about a quarter of
    # candidates passing, as on London), with the farthest as fallback, pushes the donors of
    # every study of one patient the same way, away from it; keeping the study's first
    # candidate unless it is among its nearest pushes much less.
    bar = 6.9
    main = _toy_choices(bar)
    first = _toy_choices(bar, "first")
    rank = _toy_choices(np.inf, "rank", 2)
    assert abs(_toy_choices(0.0)) < 0.06            # no rejection: no pull
    assert main < -0.5
    assert main < first < 0.0
    assert main < 2 * rank < 0.0


def test_a_first_fallback_keeps_the_studys_own_donor(astronaut, monkeypatch):
    img, lm = astronaut
    monkeypatch.setattr(swap, "DONOR_FALLBACK", "nearest")
    with pytest.raises(ValueError):
        SwapRenderer(donor_seed=SEED, shape=1.0)
    monkeypatch.setattr(swap, "DONOR_FALLBACK", "first")
    a = SwapRenderer(donor_seed=SEED, shape=1.0, donor_min_distance=50.0)
    out_a = a.render(img, lm)
    assert a.donor.label == f"pca:{SEED}"
    swap._SETTLED.clear()
    b = SwapRenderer(donor_seed=SEED, shape=1.0, donor_min_distance=50.0)
    assert np.array_equal(out_a, b.render(img, lm))


def test_reject_closest_in_the_renderer_is_deterministic_and_avoids_the_nearest(astronaut,
                                                                                monkeypatch):
    img, lm = astronaut
    monkeypatch.setattr(swap, "DONOR_REJECT_CLOSEST", 3)
    monkeypatch.setattr(swap, "DONOR_FALLBACK", "rank")
    a = SwapRenderer(donor_seed=SEED, shape=1.0, donor_candidates=6, donor_min_distance=np.inf)
    out_a = a.render(img, lm)
    # The kept candidate's distance is above the 3 nearest of the 6.
    model = load_model()
    patient = model.embed(img, lm)
    dists = []
    for k in range(6):
        r = SwapRenderer(donor_seed=candidate_seed(SEED, k), shape=1.0, donor_candidates=1)
        out = r._render_scaled(img, lm, r.geometry(lm), inplace=False)
        dists.append(float(np.linalg.norm(model.embed(out, r.geometry(lm)) - patient)))
    kept = [f"pca:{candidate_seed(SEED, k)}" for k in range(6)].index(a.donor.label)
    assert sorted(dists).index(dists[kept]) >= 3
    assert all(sorted(dists).index(dists[k]) < 3 for k in range(kept))
    swap._SETTLED.clear()
    b = SwapRenderer(donor_seed=SEED, shape=1.0, donor_candidates=6, donor_min_distance=np.inf)
    assert np.array_equal(out_a, b.render(img, lm))
