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


# A rule: (distances of a capture's candidates in seed order, their embeddings, the patient's)
# -> the chosen index.
def rule_first(d, e, p, **_):
    return 0


def rule_main(d, e, p, bar=5.45, n=8, **_):
    """main: first candidate >= bar, else the farthest."""
    d = d[:n]
    ok = np.nonzero(d >= bar)[0]
    return int(ok[0]) if len(ok) else int(np.argmax(d))


def rule_first_pass_else_first(d, e, p, bar=5.45, n=8, **_):
    """first candidate >= bar, else the first candidate."""
    d = d[:n]
    ok = np.nonzero(d >= bar)[0]
    return int(ok[0]) if len(ok) else 0


def rule_random_pass(d, e, p, bar=5.45, n=8, pick=0, **_):
    """a keyed random candidate among those >= bar (pick stands for the keyed draw)."""
    d = d[:n]
    ok = np.nonzero(d >= bar)[0]
    if not len(ok):
        return int(np.argmax(d))
    return int(ok[pick % len(ok)])


def rule_quantile(d, e, p, q=0.25, n=8, **_):
    """reject the candidates in the lowest q of this capture's own distances; first of the rest
    in seed order (a bar relative to the capture, so no fallback toward a direction)."""
    d = d[:n]
    bar = np.quantile(d, q)
    ok = np.nonzero(d >= bar)[0]
    return int(ok[0])


RULES = {
    "first": (rule_first, {}),
    "main": (rule_main, {}),
}
for bar in (4.0, 4.5, 4.8, 5.0, 5.2, 5.45):
    RULES[f"main_bar{bar}"] = (rule_main, {"bar": bar})
    RULES[f"pass_else_first_bar{bar}"] = (rule_first_pass_else_first, {"bar": bar})
for q in (0.125, 0.25, 0.375, 0.5):
    RULES[f"quantile{q}"] = (rule_quantile, {"q": q})


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
            for a, b in pairs.values() if len((a, b)) == 2]
    return {"rank1_hits": int(sum(r <= 1 for r in naive.ranks)),
            "linkage_hits": int(sum(r <= 1 for r in link.ranks)), "probes": len(prb),
            "leaks": leaks, "pair_emb_distance": round(float(np.mean(demb)), 3),
            "mean_index": round(float(np.mean(choice)), 2)}


def rules(cache: Path, keys: list[int], output: Path) -> None:
    datas = {k: dict(np.load(cache / f"cand_k{k}.npz")) for k in keys}
    result: dict = {}
    for name, (fn, kw) in RULES.items():
        per = {}
        for k, data in datas.items():
            choice = np.array([fn(data["dist"][r], data["emb"][r], data["pat"][r], **kw)
                               for r in range(len(data["ids"]))])
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
              f"pair-emb {np.mean([v['pair_emb_distance'] for k, v in per.items() if k != 'pooled']):.2f}")
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
