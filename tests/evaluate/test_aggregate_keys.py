"""Privacy pooled over keys with the worst key, and the expression metric over a run's pairs,
on hand-made observations (no model runs here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_deid.evaluate.aggregate import expression_metrics, privacy_over_keys
from dicom_deid.evaluate.manifest import Entry
from dicom_deid.evaluate.observer import FrameObs
from dicom_deid.evaluate.run import Capture, Runs, expression_pairs, held_out
from tests.evaluate.test_expression import _neutral, _smile


def _entry(name: str, identity: str, role: str, kind: str = "image") -> Entry:
    return Entry(Path(f"/data/{name}"), identity, role, kind)


def _cap(entry: Entry, descriptor=None, mesh=None) -> Capture:
    obs = FrameObs(index=0, descriptor=descriptor, described=True, mesh=mesh,
                   meshes=[mesh] if mesh is not None else [])
    return Capture(entry, "x", frames=[obs])


def test_privacy_is_pooled_over_keys_with_the_worst_key():
    rng = np.random.default_rng(0)
    people = ["p1", "p2", "p3", "p4"]
    desc = {p: rng.normal(0, 1, 128) for p in people}
    entries = [_entry(f"{p}_g.jpg", p, "gallery") for p in people] + \
              [_entry(f"{p}_p.jpg", p, "probe") for p in people]
    originals = {n: _cap(e, desc[e.identity]) for n, e in enumerate(entries)}
    # Key 0: the outputs are the people themselves (all identified, all linked);
    # key 1: no face found on any output (nobody identified).
    key0 = {n: _cap(e, desc[e.identity] + 0.01) for n, e in enumerate(entries)}
    key1 = {n: _cap(e, None) for n, e in enumerate(entries)}
    out = privacy_over_keys([key0, key1], originals)
    assert out["keys"] == 2
    assert out["rank1"] == pytest.approx(0.5)
    assert out["rank1_worst_key"] == pytest.approx(1.0)
    assert out["linkage_rank1"] == pytest.approx(0.5)
    assert out["linkage_rank1_worst_key"] == pytest.approx(1.0)
    assert out["chance"] == pytest.approx(0.25)
    assert [k["rank1"] for k in out["privacy_per_key"]] == [1.0, 0.0]


def test_expression_pairs_and_held_out():
    entries = [_entry("001_03.jpg", "london-001", "gallery"),
               _entry("001_08.jpg", "london-001", "probe"),
               _entry("002_03.jpg", "london-002", "gallery"),
               _entry("002_08.jpg", "london-002", "probe"),
               _entry("003_08.jpg", "london-003", "probe"),              # no gallery
               _entry("clip.mp4", "grid-A", "probe", kind="video")]
    assert expression_pairs(entries) == [(0, 1), (2, 3)]
    assert held_out("london-001") and not held_out("london-002") and not held_out("grid-A")


def test_expression_metrics_pool_keys_and_split_held_out():
    entries = [_entry("001_03.jpg", "london-001", "gallery"),
               _entry("001_08.jpg", "london-001", "probe"),
               _entry("002_03.jpg", "london-002", "gallery"),
               _entry("002_08.jpg", "london-002", "probe")]
    meshes = {0: _neutral(0), 1: _smile(_neutral(0)), 2: _neutral(1), 3: _smile(_neutral(1))}
    originals = {n: _cap(e, mesh=meshes[n]) for n, e in enumerate(entries)}
    runs = Runs(originals, expression_pairs(entries))
    # Key 0 keeps both smiles; key 1 erases them (the smiling output is the neutral one);
    # on key 1 the second person's output has no face at all.
    kept = {n: _cap(e, mesh=meshes[n]) for n, e in enumerate(entries)}
    erased = {0: kept[0], 1: _cap(entries[1], mesh=meshes[0]), 2: kept[2],
              3: _cap(entries[3])}
    runs.keyed["swap"] = [kept, erased]
    runs.neutral["swap"] = [{1: kept[0], 3: kept[2]}, {1: kept[0], 3: kept[2]}]
    out = expression_metrics("swap", runs)
    assert out["expression"]["compared"] == 3 and out["expression"]["no_landmarks_output"] == 1
    assert out["expression"]["all"]["cosine_mean"] == pytest.approx(2 / 3, abs=1e-3)
    assert out["expression_cosine"] == pytest.approx(1.0, abs=1e-6)       # median of 1, 1, 0
    held = out["expression"]["held_out"]       # london-001 only: kept under key 0, erased on 1
    assert held["n"] == 2
    assert held["cosine_mean"] == pytest.approx(0.5, abs=1e-3)
    assert out["expression_widening_kept_pooled_held_out"] == pytest.approx(0.5, abs=1e-3)
