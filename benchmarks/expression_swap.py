#!/usr/bin/env python
"""Is the patient's expression kept by the swap? Held-out London pairs (odd identities).

For each held-out identity the neutral and the smiling photo are rendered with ONE donor (one
study, one donor in the product) and both outputs are landmarked again with MediaPipe. Their
displacement is compared with the original pair's (shared/EVALUATION.md, "Expression"):

- the smiling capture is aligned onto the neutral one by a 2D similarity on stable points (eye
  corners, nose bridge) and the displacement of the expression-bearing points (lips, mouth
  corners, brows, eyelids) is divided by the inter-ocular distance;
- cosine: direction kept; projection: the output's displacement projected on the original's,
  over the original's length (1 = kept, 0 = erased); amplitude: |output| / |original|;
- mouth widening: change of the corner-to-corner distance; corner lift: the mouth corners'
  height against the eyes, in the face's own frame (not against the lip centre, which drops when
  the mouth opens); both as output change / original change.

``--model-only`` skips rendering and compares the expression model's fit on the original
landmarks (mean shape + fitted expression) instead: the ceiling of what the swap can keep.
A jittered copy of the neutral (``jitter``) gives the floor of the metric.

This is a stand-in for dicom_deid/evaluate/expression.py (being written on another branch).

    .venv/bin/python benchmarks/expression_swap.py [--shape 1.0] [--limit 24] [--model-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.faces import mesh  # noqa: E402

DATA = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data"
STABLE = (33, 133, 263, 362, 168, 6, 197, 195)
LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321,
        375) + mesh.INNER_LIPS
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
EXPRESSION_POINTS = tuple(sorted(set(LIPS + BROWS + mesh.RIGHT_EYE + mesh.LEFT_EYE)))
CORNERS = (61, 291)
EYES = (33, 133, 263, 362)


def pair_measures(neutral: np.ndarray, smiling: np.ndarray) -> dict[str, np.ndarray | float]:
    """Displacement (expression points, IOD units), widening and corner lift of a pair."""
    n = np.asarray(neutral, np.float64)[:, :2]
    s = np.asarray(smiling, np.float64)[:, :2]
    sim = mesh.fit_similarity(s[list(STABLE)], n[list(STABLE)])
    s = sim.apply(s)
    iod = float(np.linalg.norm(n[263] - n[33]))
    disp = (s - n)[list(EXPRESSION_POINTS)] / iod
    x = (n[263] - n[33]) / iod
    y = np.array([-x[1], x[0]])

    def height(p: np.ndarray) -> float:
        return float((p[list(CORNERS)].mean(axis=0) - p[list(EYES)].mean(axis=0)) @ y) / iod

    def width(p: np.ndarray) -> float:
        return float(np.linalg.norm(p[CORNERS[1]] - p[CORNERS[0]])) / iod

    return {"disp": disp.reshape(-1), "widening": width(s) - width(n),
            "lift": height(n) - height(s)}


def compare(orig: dict, out: dict) -> dict[str, float]:
    a, b = orig["disp"], out["disp"]
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return {"cosine": float(a @ b / max(na * nb, 1e-12)),
            "projection": float(a @ b / max(na * na, 1e-12)),
            "amplitude": nb / max(na, 1e-12),
            "widening_orig": orig["widening"], "widening_out": out["widening"],
            "lift_orig": orig["lift"], "lift_out": out["lift"]}


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    def ratio(key: str) -> float:
        # Pooled over identities: sum of kept change / sum of original change, so that a pair
        # with almost no original change does not dominate.
        return float(sum(r[f"{key}_out"] for r in rows) / sum(r[f"{key}_orig"] for r in rows))

    return {"pairs": len(rows),
            "cosine": float(np.mean([r["cosine"] for r in rows])),
            "projection": float(np.mean([r["projection"] for r in rows])),
            "amplitude": float(np.mean([r["amplitude"] for r in rows])),
            "widening_kept": ratio("widening"), "lift_kept": ratio("lift")}


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=0, help="first N held-out identities only")
    ap.add_argument("--model-only", action="store_true")
    ap.add_argument("--save", type=Path, help="write the outputs' PNGs here (not committed)")
    args = ap.parse_args(argv)

    from dicom_deid.faces.expression import load_expression_model
    from dicom_deid.faces.swap import SwapRenderer

    london = DATA / "faces" / "london"
    ids = [p.name.split("_")[0] for p in sorted((london / "neutral").glob("*_03.jpg"))
           if int(p.name[:3]) % 2 == 1 and (london / "smiling" / f"{p.name[:3]}_08.jpg").is_file()]
    if args.limit:
        ids = ids[: args.limit]
    model = load_expression_model()
    rng = np.random.default_rng(0)
    rows, floor = [], []
    for ident in ids:
        rgb_n = read_rgb(london / "neutral" / f"{ident}_03.jpg")
        rgb_s = read_rgb(london / "smiling" / f"{ident}_08.jpg")
        lm_n, lm_s = mesh.landmarks_from_image(rgb_n), mesh.landmarks_from_image(rgb_s)
        if lm_n is None or lm_s is None:
            continue
        orig = pair_measures(lm_n, lm_s)
        jitter = lm_n + rng.normal(0, 0.01 * mesh.inter_ocular(lm_n), lm_n.shape)
        floor.append(compare(orig, pair_measures(lm_n, jitter)))
        if args.model_only:
            out_n = model.mean + model.expression(model.to_canonical(lm_n)[0])
            out_s = model.mean + model.expression(model.to_canonical(lm_s)[0])
        else:
            renderer = SwapRenderer(donor_seed=int(ident) * 7919, shape=args.shape)
            img_n, img_s = renderer.render(rgb_n, lm_n), renderer.render(rgb_s, lm_s)
            if args.save:
                import cv2

                args.save.mkdir(parents=True, exist_ok=True)
                for name, img in ((f"{ident}_n.png", img_n), (f"{ident}_s.png", img_s)):
                    cv2.imwrite(str(args.save / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            out_n, out_s = mesh.landmarks_from_image(img_n), mesh.landmarks_from_image(img_s)
            if out_n is None or out_s is None:
                print(f"{ident}: output not landmarked", file=sys.stderr)
                continue
        rows.append(compare(orig, pair_measures(out_n, out_s)))
    result = {"shape": args.shape, "mode": "model" if args.model_only else "swap",
              "kept": summarise(rows), "jitter_floor": summarise(floor)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
