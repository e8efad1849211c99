"""Swap's donor rejection: a study's donor is the first of its keyed candidates whose render
stays far enough from the patient in the donor model's appearance embedding; deterministic for
a key and a content, and kept for the study's later renderers."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import swap
from dicom_deid.faces.donors import candidate_seed, load_model
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
    # Nothing reaches 50: the farthest of the 8 candidates is taken.
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
