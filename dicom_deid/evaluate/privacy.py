"""Re-identification attacks on face descriptors (pure NumPy, no model here).

A gallery is a list of (identity, descriptor or None); a probe is the same. The distance from a
probe to an identity is the smallest distance to any of that identity's gallery descriptors.
A probe's rank is 1 + the number of gallery identities strictly closer than its own identity;
a probe without a descriptor (no face found) or whose identity has no gallery descriptor is
never identified (rank = infinity), so hiding the face counts as privacy, and is reported
separately as the no-face rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dicom_deid.evaluate.embeddings import MATCH_THRESHOLD

Labelled = tuple[str, "np.ndarray | None"]


@dataclass
class Identification:
    rank1: float | None       # fraction of probes identified at rank 1 (None: no probes)
    rank5: float | None
    chance: float | None      # rank-1 chance level: 1 / gallery identities
    chance5: float | None     # rank-5 chance level: min(5, G) / G
    probes: int
    gallery_identities: int
    ranks: list[float]        # one per probe (math.inf when not identified)


def identity_distances(gallery: Sequence[Labelled]) -> tuple[list[str], list[np.ndarray]]:
    """Identities of the gallery in first-seen order, each with its descriptors stacked."""
    order: list[str] = []
    found: dict[str, list[np.ndarray]] = {}
    for identity, desc in gallery:
        if identity not in found:
            order.append(identity)
            found[identity] = []
        if desc is not None:
            found[identity].append(np.asarray(desc, dtype=np.float64))
    return order, [np.stack(found[i]) if found[i] else np.empty((0, 128)) for i in order]


def identify(gallery: Sequence[Labelled], probes: Sequence[Labelled]) -> Identification:
    """Rank-1 and rank-5 identification of probes against gallery, with chance levels.

    Probes whose identity is not in the gallery at all are left out (they cannot be
    identified by construction and would only dilute the rate); probes of a gallery identity
    that has no usable gallery descriptor stay in, unidentified.
    """
    identities, stacks = identity_distances(gallery)
    used = [p for p in probes if p[0] in identities]
    ranks = [math.inf] * len(used)
    with_desc = [i for i, p in enumerate(used) if p[1] is not None]
    if with_desc and identities:
        queries = np.stack([np.asarray(used[i][1], dtype=np.float64) for i in with_desc])
        # Distance of every probe to every identity: its nearest gallery descriptor.
        dists = np.full((len(with_desc), len(identities)), np.inf)
        for j, stack in enumerate(stacks):
            if len(stack):
                d = np.linalg.norm(queries[:, None, :] - stack[None, :, :], axis=2)
                dists[:, j] = d.min(axis=1)
        index = {name: j for j, name in enumerate(identities)}
        for row, i in enumerate(with_desc):
            own = dists[row, index[used[i][0]]]
            if np.isfinite(own):
                ranks[i] = float(1 + np.count_nonzero(dists[row] < own))
    g = len(identities)
    n = len(ranks)
    return Identification(
        rank1=sum(r <= 1 for r in ranks) / n if n else None,
        rank5=sum(r <= 5 for r in ranks) / n if n else None,
        chance=1.0 / g if g else None,
        chance5=min(5, g) / g if g else None,
        probes=n,
        gallery_identities=g,
        ranks=ranks,
    )


def verification_rate(
    originals: Sequence[Labelled], deidentified: Sequence[Labelled],
    threshold: float = MATCH_THRESHOLD,
) -> tuple[float | None, int]:
    """Share of genuine pairs (original, de-identified; same identity) closer than threshold.

    Every original of an identity is paired with every de-identified capture of it; a pair
    with a missing descriptor on either side is a pair that does not verify.
    Returns (rate, pairs).
    """
    hits = pairs = 0
    for ident_o, d_o in originals:
        for ident_d, d_d in deidentified:
            if ident_o != ident_d:
                continue
            pairs += 1
            if d_o is not None and d_d is not None and np.linalg.norm(d_o - d_d) < threshold:
                hits += 1
    return (hits / pairs if pairs else None), pairs


def matches(a: np.ndarray | None, b: np.ndarray | None, threshold: float = MATCH_THRESHOLD) -> bool:
    """Do two descriptors match at dlib's operating point? (False when either is missing)"""
    return a is not None and b is not None and float(np.linalg.norm(a - b)) < threshold
