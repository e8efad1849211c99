"""Known answers for the re-identification attacks, on synthetic descriptors (fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicom_deid.evaluate.privacy import identify, matches, verification_rate


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_identical_descriptors_identify_every_probe():
    rng = np.random.default_rng(0)
    desc = _unit(rng, 20)
    gallery = [(f"id{i}", d) for i, d in enumerate(desc)]
    result = identify(gallery, gallery)
    assert result.rank1 == 1.0 and result.rank5 == 1.0
    assert result.chance == pytest.approx(1 / 20)
    assert result.chance5 == pytest.approx(5 / 20)


def test_shuffled_labels_give_chance_level():
    rng = np.random.default_rng(1)
    g = 50
    desc = _unit(rng, g)
    gallery = [(f"id{i}", d) for i, d in enumerate(desc)]
    probes_desc = desc + rng.normal(scale=0.01, size=desc.shape)
    rank1, rank5 = [], []
    for _ in range(300):
        labels = rng.permutation(g)
        probes = [(f"id{labels[i]}", probes_desc[i]) for i in range(g)]
        result = identify(gallery, probes)
        rank1.append(result.rank1)
        rank5.append(result.rank5)
    # A random permutation has one fixed point on average: rank-1 = 1/G, rank-5 = 5/G.
    assert np.mean(rank1) == pytest.approx(1 / g, abs=0.006)
    assert np.mean(rank5) == pytest.approx(5 / g, abs=0.012)


def test_probe_without_face_is_not_identified_and_counts():
    rng = np.random.default_rng(2)
    desc = _unit(rng, 4)
    gallery = [(f"id{i}", d) for i, d in enumerate(desc)]
    probes = [("id0", desc[0]), ("id1", None), ("id2", desc[2]), ("id3", None)]
    result = identify(gallery, probes)
    assert result.rank1 == 0.5
    assert result.ranks[1] == math.inf and result.probes == 4


def test_probe_of_identity_missing_from_gallery_is_left_out():
    rng = np.random.default_rng(3)
    desc = _unit(rng, 3)
    gallery = [("a", desc[0]), ("b", desc[1])]
    result = identify(gallery, [("a", desc[0]), ("zzz", desc[2])])
    assert result.probes == 1 and result.rank1 == 1.0


def test_rank_counts_identities_not_gallery_items():
    # Two gallery captures of "a" both closer than "b"'s: b's probe is at rank 2, not 3.
    base = np.zeros(128)
    e = np.eye(128)
    gallery = [("a", base + 0.1 * e[0]), ("a", base + 0.1 * e[1]), ("b", base + 0.5 * e[2])]
    result = identify(gallery, [("b", base)])
    assert result.ranks == [2.0]
    assert result.rank1 == 0.0 and result.rank5 == 1.0
    assert result.gallery_identities == 2


def test_gallery_identity_without_descriptor_stays_in_the_chance_level():
    e = np.eye(128)
    gallery = [("a", e[0]), ("b", None), ("c", e[2])]
    result = identify(gallery, [("b", e[1]), ("a", e[0])])
    assert result.chance == pytest.approx(1 / 3)
    assert result.ranks[0] == math.inf and result.rank1 == 0.5


def test_verification_rate_uses_the_06_threshold():
    e = np.eye(128)
    originals = [("a", np.zeros(128)), ("b", np.zeros(128))]
    deid = [("a", 0.59 * e[0]), ("b", 0.61 * e[0]), ("c", np.zeros(128))]
    rate, pairs = verification_rate(originals, deid)
    assert pairs == 2 and rate == 0.5
    rate, pairs = verification_rate(originals, [("a", None)])
    assert pairs == 1 and rate == 0.0
    assert matches(np.zeros(3), np.full(3, 0.3)) and not matches(np.zeros(3), None)
