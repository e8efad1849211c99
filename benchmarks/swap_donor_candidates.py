#!/usr/bin/env python
"""How does swap's donor rejection pick, and what does each rule cost? (issue 15, swap privacy)

Renders every London capture with each of a study's first N donor candidates forced (same
evaluation keys and studies as `dicom-deid evaluate`), records each candidate's distance from
the patient in the donor model's appearance embedding (what `SwapRenderer._settle_donor`
compares) and the candidate's embedding itself, and dlib descriptors of every render and
original. A rejection rule is then a choice of one candidate per capture, and its rank-1,
linkage and recogniser leaks follow without rendering again (`--rules`).

dlib is the independent recogniser that MEASURES privacy here; the product never sees it.

Stage 1 (per key, slow): `--render K` writes the renders to --cache (outside the repository,
made from test data) and `cand_kK.npz` (distances, embeddings, descriptors) there.
Stage 2: `--rules` reads the npz files and writes aggregates to --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MANIFEST = REPO / "benchmarks" / "manifests" / "london.csv"
MATCH = 0.6


def render_key(key: int, n: int, cache: Path) -> None:
    import cv2
    import dlib
    import face_recognition_models as frm

    from benchmarks.swap_linkage_regions import _dlib_shape
    from dicom_deid.evaluate.manifest import open_source, read_manifest
    from dicom_deid.evaluate.run import Settings, make_replacer, study_of
    from dicom_deid.faces import swap
    from dicom_deid.faces.donors import candidate_seed

    got: dict = {}

    original_render = swap.SwapRenderer.render

    def render(self, rgb, landmarks, *, inplace=False, track_id=None):
        # Every candidate on this face: the distance exactly as _settle_donor measures it, and
        # the output exactly as render() draws it (on a fresh track, as for a single image).
        if self.donor_settled:
            return original_render(self, rgb, landmarks, inplace=inplace, track_id=track_id)
        lm = swap.check_inputs(rgb, landmarks)
        clean = rgb.copy()
        patient = self.model.embed(clean, lm)
        got.update(patient=patient, dist=[], emb=[], out=[])
        self.donor_settled = True
        for i in range(n):
            self._use_donor(candidate_seed(self.seed, i))
            geo = self.geometry(lm)
            probe = self._render_scaled(clean, lm, geo, inplace=False)
            emb = self.model.embed(probe, geo)
            got["dist"].append(float(np.linalg.norm(emb - patient)))
            got["emb"].append(emb)
            self.reset()
            got["out"].append(original_render(self, clean, landmarks, inplace=False,
                                              track_id=track_id))
        self._use_donor(candidate_seed(self.seed, 0))
        self.reset()
        return original_render(self, rgb, landmarks, inplace=inplace, track_id=track_id)

    swap.SwapRenderer.render = render
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_model_location())
    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def describe(img):
        shape = _dlib_shape(detector, predictor, img)
        if shape is None:
            return np.full(128, np.nan)
        return np.array(rec.compute_face_descriptor(img, shape))

    entries = read_manifest(MANIFEST)
    settings = Settings(methods=["swap"], shape=1.0)
    cache.mkdir(parents=True, exist_ok=True)
    stems, ids, roles = [], [], []
    dist = np.full((len(entries), n), np.nan)
    emb = np.full((len(entries), n, 20), np.nan)
    pat = np.full((len(entries), 20), np.nan)
    desc = np.full((len(entries), n, 128), np.nan)
    orig = np.full((len(entries), 128), np.nan)
    started = time.monotonic()
    for row, e in enumerate(entries):
        frame = np.ascontiguousarray(next(open_source(e.path).frames))
        stems.append(e.path.stem)
        ids.append(e.identity)
        roles.append(e.role)
        orig[row] = describe(frame)
        got.clear()
        replacer = make_replacer("swap", settings, 25.0, key, study_of(e))
        try:
            first = next(iter(replacer.stream([frame])))[1]
        finally:
            replacer.close()
        if got:
            pat[row] = got["patient"]
            for i in range(n):
                dist[row, i] = got["dist"][i]
                emb[row, i] = got["emb"][i]
                out = got["out"][i]
                if i == 0 and not np.array_equal(out, first):
                    print(f"warning: {e.path.stem} candidate 0 differs from the output "
                          f"({np.abs(out.astype(int) - first).max()} levels)", flush=True)
                cv2.imwrite(str(cache / f"k{key}_{e.path.stem}_c{i}.png"),
                            cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
                desc[row, i] = describe(np.ascontiguousarray(out))
        print(f"key {key} {row + 1}/{len(entries)} {time.monotonic() - started:.0f}s",
              flush=True)
    np.savez(cache / f"cand_k{key}.npz", dist=dist, emb=emb, pat=pat, desc=desc, orig=orig,
             stems=np.array(stems), ids=np.array(ids), roles=np.array(roles))


# A rule: `donors.settle_candidate`'s settings (the product's own function replayed on the
# recorded distances): (candidates, min_distance, fallback, reject_closest).
RULES: dict[str, tuple[int, float, str, int]] = {"first": (1, 0.0, "farthest", 0),
                                                 "main": (8, 5.45, "farthest", 0)}
for _bar in (4.5, 5.0, 5.45):
    RULES[f"bar{_bar}_farthest"] = (8, _bar, "farthest", 0)
    RULES[f"bar{_bar}_first"] = (8, _bar, "first", 0)
for _n, _k in ((4, 1), (6, 1), (6, 2), (8, 1), (8, 2), (8, 3), (8, 4), (8, 5), (8, 6)):
    RULES[f"rank_{_n}_reject{_k}"] = (_n, float("inf"), "rank", _k)


# The bar first; when no candidate reaches it, the first candidate not among the study's
# ``reject`` nearest instead of the farthest (DONOR_FALLBACK "rank").
for _k in (2, 3, 4, 5, 6):
    RULES[f"bar5.45_else_rank_reject{_k}"] = (8, 5.45, "rank", _k)


def choose(dist: np.ndarray, rule: tuple[int, float, str, int]) -> int:
    from dicom_deid.faces.donors import settle_candidate

    n, bar, fallback, reject = rule
    return settle_candidate(lambda i: float(dist[i]), n, bar, fallback, reject)[0]


def pair_z(values: np.ndarray, ids: np.ndarray, gal: list, prb: list) -> float:
    """Mean z of each probe's distance to its own identity's gallery capture among its
    distances to every gallery capture (more negative: the two captures of one person more
    alike than strangers are), in the space of ``values``."""
    gids = [str(ids[r]) for r in gal]
    zs = []
    for r in prb:
        row = np.linalg.norm(values[gal] - values[r], axis=1)
        if np.isnan(row).any():
            continue
        j = gids.index(str(ids[r]))
        others = np.delete(row, j)
        zs.append((row[j] - others.mean()) / others.std())
    return round(float(np.mean(zs)), 3)


def score(choice: np.ndarray, data: dict) -> dict:
    from dicom_deid.evaluate.privacy import identify

    ids, roles, desc, orig = data["ids"], data["roles"], data["desc"], data["orig"]
    rows = np.arange(len(ids))
    out = desc[rows, choice]

    def lab(r, v):
        return (str(ids[r]), None if np.isnan(v).any() else v)

    gal = [r for r in rows if roles[r] == "gallery"]
    prb = [r for r in rows if roles[r] == "probe"]
    naive = identify([lab(r, orig[r]) for r in gal], [lab(r, out[r]) for r in prb])
    link = identify([lab(r, out[r]) for r in gal], [lab(r, out[r]) for r in prb])
    leaks = [str(data["stems"][r]) for r in prb
             if not np.isnan(out[r]).any() and np.linalg.norm(out[r] - orig[r]) < MATCH]
    pairs = {}
    for r in rows:
        pairs.setdefault(str(ids[r]), []).append(r)
    # distance between the two captures' settled renders in the donor embedding
    demb = [float(np.linalg.norm(data["emb"][a, choice[a]] - data["emb"][b, choice[b]]))
            for a, b in pairs.values()]
    # and for dlib (diagnostic): the two captures' renders, against renders of different people
    ddlib = [float(np.linalg.norm(out[a] - out[b])) for a, b in pairs.values()]
    fell = ~(data["dist"][:, :8] >= 5.45).any(axis=1)
    linked = [str(ids[r]) for r, rank in zip(prb, link.ranks, strict=True) if rank <= 1]
    return {"rank1_hits": int(sum(r <= 1 for r in naive.ranks)),
            "linkage_hits": int(sum(r <= 1 for r in link.ranks)), "probes": len(prb),
            "leaks": leaks, "linked": linked,
            "pair_emb_distance": round(float(np.mean(demb)), 3),
            "pair_dlib_distance": round(float(np.nanmean(ddlib)), 4),
            "pair_z_dlib": pair_z(out, ids, gal, prb),
            "pair_z_embedding": pair_z(data["emb"][rows, choice], ids, gal, prb),
            # main's fallbacks (no candidate of 8 reaches 5.45), among all captures and among
            # the captures of the pairs this rule leaves linked
            "fallback_share": round(float(np.mean(fell)), 3),
            "fallback_share_linked": (round(float(np.mean([fell[r] for i in linked
                                                           for r in pairs[i]])), 3)
                                      if linked else None),
            "distance_chosen": round(float(np.mean(data["dist"][rows, choice])), 3),
            "mean_index": round(float(np.mean(choice)), 2)}


def rules(cache: Path, keys: list[int], output: Path) -> None:
    datas = {k: dict(np.load(cache / f"cand_k{k}.npz")) for k in keys}
    result: dict = {}
    for name, rule in RULES.items():
        per = {}
        for k, data in datas.items():
            choice = np.array([choose(data["dist"][r], rule) for r in range(len(data["ids"]))])
            per[f"key{k}"] = score(choice, data)
        rank1 = sum(v["rank1_hits"] for v in per.values())
        link = sum(v["linkage_hits"] for v in per.values())
        probes = sum(v["probes"] for v in per.values())
        leaks = sum(len(v["leaks"]) for v in per.values())
        per["pooled"] = {"rank1": round(rank1 / probes, 4), "linkage": round(link / probes, 4),
                         "rank1_hits": rank1, "linkage_hits": link, "leaks": leaks,
                         "worst_linkage_hits": max(v["linkage_hits"] for k, v in per.items()
                                                   if k != "pooled")}
        result[name] = per
        print(f"{name:28s} rank-1 {rank1:3d} linkage {link:3d}/{probes} "
              f"(worst key {per['pooled']['worst_linkage_hits']}) leaks {leaks} "
              f"pair-emb {np.mean([v['pair_emb_distance'] for k, v in per.items() if k != 'pooled']):.2f}"
              f" pair-dlib {np.mean([v['pair_dlib_distance'] for k, v in per.items() if k != 'pooled']):.3f}"
              f" pair-z dlib {np.mean([v['pair_z_dlib'] for k, v in per.items() if k != 'pooled']):+.3f}"
              f" emb {np.mean([v['pair_z_embedding'] for k, v in per.items() if k != 'pooled']):+.3f}"
              f" mean index {np.mean([v['mean_index'] for k, v in per.items() if k != 'pooled']):.2f}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"what": "donor rejection rules replayed on forced-candidate "
                                  "renders of London (dlib measures; product never uses it)",
                                  "keys": keys, "results": result}, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=int, default=None, metavar="KEY")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--rules", action="store_true")
    parser.add_argument("--keys", default="0,1,2")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/swap_donor_candidates"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.render is not None:
        render_key(args.render, args.candidates, args.cache)
    if args.rules:
        rules(args.cache, [int(k) for k in args.keys.split(",")], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
