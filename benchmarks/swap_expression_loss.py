#!/usr/bin/env python
"""Where does swap lose the held-out expression cosine? London neutral/smiling pairs, per stage
and per landmark region.

Each held-out pair (odd London ids) is rendered as evaluate renders it: the smiling photo under
its own study, the neutral photo under the smiling photo's study (one study, one donor), through
evaluate's `make_replacer` (the product's tracker, renderer and leak check), for every key.
Evaluate's own MediaPipe observer (`StaticMesh`) landmarks the originals and the outputs. The
renderer is wrapped so that the landmarks it was given and the geometry it drew are kept, and
the geometry is recomputed offline with parts of the transfer switched off (`variant`):

- ``input``: the product's own landmarks of the originals (its tracker's mesh): the ceiling set
  by the product's landmarker against the observer's;
- ``geometry``: what the renderer drew (donor shape + the patient's expression, placed, with
  apertures, irises, lip thickness and lid margins);
- ``output``: the observer's landmarks of the outputs (what evaluate scores);
- variants of the geometry: ``rigid`` (POSE_FIT "rigid"), ``no_apertures``, ``no_iris``,
  ``no_lips``, ``no_lids``, ``mean_donor`` (the bare mean shape as donor), ``shape0`` (the
  patient's own geometry);
- ``geo_vs_out``: the output's displacement against the geometry's (render and re-landmarking
  alone).

The cosine (evaluate's `expression_kept`) is reported as evaluate pools it (median over pairs)
and split by region: 1 - cosine = |u_out - u_orig|^2 / 2 with u the unit displacements, so each
region's share of that squared difference is its share of the loss.

    nice -n 19 .venv/bin/python benchmarks/swap_expression_loss.py --keys 0,1,2 \\
        [--swap-knob NAME=JSON] [--limit N] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.evaluate import expression as ex  # noqa: E402
from dicom_deid.faces import eyes, lips, mesh  # noqa: E402
from dicom_deid.faces import swap as swap_mod  # noqa: E402

LONDON = REPO.parent / "shared" / "data" / "faces" / "london"
REGIONS = {
    "lips_outer": ex.LIPS_OUTER, "lips_inner": ex.LIPS_INNER,
    "brows": ex.RIGHT_BROW + ex.LEFT_BROW, "lids": ex.RIGHT_LIDS + ex.LEFT_LIDS,
}
VARIANTS = ("geometry_replica", "rigid", "no_apertures", "no_iris", "no_lips", "no_lids",
            "mean_donor", "shape0", "no_pose_all_no_apertures", "lips_mean_profile",
            "lips_rendered_profile")


def variant(r: swap_mod.SwapRenderer, lm: np.ndarray, *, pose: str | None = None,
            apertures: bool = True, iris: bool = True, lip: bool = True, lids: bool = True,
            donor: np.ndarray | None = None, own: bool = False,
            lip_profile: str | None = None) -> np.ndarray:
    """The renderer's still-image geometry for ``lm`` (track 0, one frame: the displacement is
    the single-image expression fit), with parts switched off."""
    model = r.expression
    assert model is not None
    patient, transform = model.to_canonical(lm)
    if own:
        target = patient
    else:
        d = model.expression(patient, r.identity_prior)
        for eye, ir in ((mesh.RIGHT_EYE, mesh.RIGHT_IRIS), (mesh.LEFT_EYE, mesh.LEFT_IRIS)):
            d[list(ir)] = d[list(eye)].mean(axis=0)
        target = (r.identity_shape if donor is None else donor) + d
        if (pose or r.pose_fit) == "all":
            target = swap_mod.fit_pose_all(target, patient, r.aspect)
    out = model.from_canonical(target, transform).astype(np.float32)
    if apertures:
        for upper, lower in mesh.APERTURES:
            swap_mod._keep_aperture(out, lm, upper, lower)
    if iris:
        for eye, ir in ((mesh.RIGHT_EYE, mesh.RIGHT_IRIS), (mesh.LEFT_EYE, mesh.LEFT_IRIS)):
            before, after = lm[list(eye)].mean(axis=0), out[list(eye)].mean(axis=0)
            ratio = (mesh.inter_ocular(out) or 1.0) / (mesh.inter_ocular(lm) or 1.0)
            out[list(ir)] = after + (lm[list(ir)] - before) * ratio
    if lip and r.lip_thickness is not None:
        lips.keep_lip_thickness(out, lm, r.model.canonical, r.lip_thickness,
                                lip_profile or r.lip_profile)
    if lids and r.lid_bands is not None:
        out = eyes.follow_lid_margin(out, r.lid_bands)
    return out


def variants(r: swap_mod.SwapRenderer, lm: np.ndarray) -> dict[str, np.ndarray]:
    mean = r.model.canonical.astype(np.float64)
    return {
        "geometry_replica": variant(r, lm),
        "rigid": variant(r, lm, pose="rigid"),
        "no_apertures": variant(r, lm, apertures=False),
        "no_iris": variant(r, lm, iris=False),
        "no_lips": variant(r, lm, lip=False),
        "no_lids": variant(r, lm, lids=False),
        "mean_donor": variant(r, lm, donor=mean),
        "shape0": variant(r, lm, own=True),
        "no_pose_all_no_apertures": variant(r, lm, pose="rigid", apertures=False),
        "lips_mean_profile": variant(r, lm, lip_profile="mean"),
        "lips_rendered_profile": variant(r, lm, lip_profile="rendered"),
    }


def unit_split(oa, ob, pa, pb) -> tuple[float, dict[str, float], dict[str, float]]:
    """(cosine, per-region share of 1 - cosine, per-region cosine) of one pair, evaluate's
    alignment (pa, pb: the compared side's two captures)."""
    template = ex.canonical_frame(oa)
    c = [ex.align(a, template) for a in (oa, ob, pa, pb)]
    idx = list(ex.EXPRESSION_POINTS)
    d_o, d_p = c[1][idx] - c[0][idx], c[3][idx] - c[2][idx]
    u_o, u_p = d_o / np.linalg.norm(d_o), d_p / max(np.linalg.norm(d_p), 1e-12)
    err = ((u_p - u_o) ** 2).sum(axis=1)
    total = float(err.sum()) or 1e-12
    cos = float((u_o * u_p).sum())
    share, rcos = {}, {}
    pos = {p: i for i, p in enumerate(idx)}
    for name, pts in REGIONS.items():
        sel = [pos[p] for p in pts]
        share[name] = float(err[sel].sum() / total)
        o, p = d_o[sel].ravel(), d_p[sel].ravel()
        rcos[name] = float(o @ p / max(np.linalg.norm(o) * np.linalg.norm(p), 1e-12))
    return cos, share, rcos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", default="0,1,2")
    parser.add_argument("--limit", type=int, default=None, help="first N held-out pairs")
    parser.add_argument("--swap-knob", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    for knob in args.swap_knob:
        name, value = knob.split("=", 1)
        if not hasattr(swap_mod, name):
            raise SystemExit(f"swap has no {name}")
        v = json.loads(value)
        setattr(swap_mod, name, tuple(v) if isinstance(v, list) else v)

    from dicom_deid.evaluate.manifest import open_source
    from dicom_deid.evaluate.observer import StaticMesh
    from dicom_deid.evaluate.run import Settings, make_replacer
    from dicom_deid.policy import DEFAULT_FACE_SHAPE

    ids = sorted(p.stem.split("_")[0] for p in (LONDON / "smiling").glob("*.jpg"))
    ids = [i for i in ids if int(i) % 2 == 1 and any((LONDON / "neutral").glob(f"{i}_*.jpg"))]
    if args.limit:
        ids = ids[: args.limit]
    settings = Settings(methods=["swap"], shape=DEFAULT_FACE_SHAPE, progress=False)
    observer = StaticMesh()
    seen: list[tuple] = []
    original = swap_mod.SwapRenderer.geometry

    def spy(self, landmarks, track_id=None):
        geo = original(self, landmarks, track_id)
        if track_id is not None:  # the render's own call, not a donor candidate's
            seen.append((self, swap_mod.check_landmarks(landmarks).copy(), geo.copy()))
        return geo

    swap_mod.SwapRenderer.geometry = spy  # type: ignore[method-assign]
    rows = []
    for key in (int(k) for k in args.keys.split(",")):
        for ident in ids:
            neutral = next((LONDON / "neutral").glob(f"{ident}_*.jpg"))
            smiling = next((LONDON / "smiling").glob(f"{ident}_*.jpg"))
            study = smiling.as_posix()
            rec = {}
            # The smiling capture first, as evaluate renders it: it settles the study's donor.
            for name, path in (("b", smiling), ("a", neutral)):
                src = open_source(path)
                frame = next(iter(src.frames))
                seen.clear()
                rep = make_replacer("swap", settings, 25.0, key, study)
                outs = [out for _, out, _ in rep.stream([frame])]
                orig_lm = observer.landmarks(frame)
                out_lm = observer.landmarks(outs[0])
                if not seen or not orig_lm or not out_lm:
                    rec = {}
                    break
                r, lm, drawn = seen[-1]
                geos = variants(r, lm)
                # The renderer's own geometry with its lid margins, as `render` drew it.
                if r.lid_bands is not None:
                    drawn = eyes.follow_lid_margin(drawn, r.lid_bands)
                rec[name] = {"orig": orig_lm[0], "out": out_lm[0], "input": lm,
                             "geometry": drawn, "donor": r.donor.label, **geos}
            if not rec:
                print(f"key {key} {ident}: no landmarks", flush=True)
                continue
            a, b = rec["a"], rec["b"]
            row = {"key": key, "id": ident, "same_donor": a["donor"] == b["donor"]}
            for stage in ("input", "geometry", "out") + VARIANTS:
                cos, share, rcos = unit_split(a["orig"], b["orig"], a[stage], b[stage])
                row[stage] = {"cosine": cos, "loss_share": share, "region_cosine": rcos}
            cos, share, rcos = unit_split(a["geometry"], b["geometry"], a["out"], b["out"])
            row["geo_vs_out"] = {"cosine": cos, "loss_share": share, "region_cosine": rcos}
            row["replica_error"] = float(max(np.abs(a["geometry"] - a["geometry_replica"]).max(),
                                             np.abs(b["geometry"] - b["geometry_replica"]).max()))
            rows.append(row)
            print(f"key {key} {ident}: out {row['out']['cosine']:.3f} geo "
                  f"{row['geometry']['cosine']:.3f} input {row['input']['cosine']:.3f} "
                  f"rigid {row['rigid']['cosine']:.3f} noap {row['no_apertures']['cosine']:.3f} "
                  f"meandonor {row['mean_donor']['cosine']:.3f} geo_vs_out "
                  f"{row['geo_vs_out']['cosine']:.3f} same_donor {row['same_donor']}", flush=True)
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    if args.output:
        args.output.write_text(json.dumps({"knobs": args.swap_knob, "keys": args.keys,
                                           "summary": summary, "pairs": rows}, indent=1))


def summarise(rows: list[dict]) -> dict:
    stages = ("input", "geometry", "out", "geo_vs_out") + VARIANTS
    out: dict = {"n": len(rows), "same_donor": sum(r["same_donor"] for r in rows)}
    for s in stages:
        cos = [r[s]["cosine"] for r in rows]
        out[s] = {"cosine_median": float(np.median(cos)), "cosine_mean": float(np.mean(cos)),
                  "loss_share_mean": {k: float(np.mean([r[s]["loss_share"][k] for r in rows]))
                                      for k in REGIONS},
                  "region_cosine_median": {k: float(np.median([r[s]["region_cosine"][k]
                                                               for r in rows]))
                                           for k in REGIONS}}
    return out


if __name__ == "__main__":
    main()
