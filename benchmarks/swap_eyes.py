#!/usr/bin/env python
"""Swap on the GRID clips: blinks, eye and mouth aspect ratios and first-frame flicker, with and
without the changes of issue 15's eye work, side by side in one run.

For each clip of ../shared/data/video/grid and each donor seed, the swap runs through the
product's `FaceReplacer` (leak check off: it only adds covers where a face is found, and costs
time) and the independent MediaPipe mesh of `dicom-deid evaluate` (static mode, each frame on its
own) measures the original and the output. The measures are evaluate's own functions: eye
aspect ratio r per clip (the mean over clips is evaluate's ``ear_r``) and pooled, blinks (EAR
under 0.75 x the original's median for >= 2 frames), mouth aspect ratio r, and flicker (mean
grey-level change between frames inside the original's face box, output over original; over
all frames and over the first 10, evaluate's ``flicker_ratio_first``).

Variants (``--variants``, comma-separated):
- ``current``: the renderer as shipped;
- ``mesh-lids``: ``closing_lids=False`` (the eyelids as MediaPipe's mesh places them, painted
  eyeball however thin the opening: the behaviour before);
- ``cold-start``: ``neutral_glide=0`` and the tracker's ``prime_passes=0`` (a new track's
  first landmarks from one mesh pass on the detector's crop, and the track's neutral shape
  jumping to each new estimate: the behaviour before);
- ``before``: both (the swap as on main before this work).

    .venv/bin/python benchmarks/swap_eyes.py [--frames 75] [--seeds 0,1] \
        [--variants current,mesh-lids] [--clips lbax4n,...] [--output FILE.json]

GRID: Cooke, Barker, Cunningham & Shao (2006), CC BY 4.0 (aggregates only are written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data"
GRID = DATA / "video" / "grid"
FIRST_FRAMES = 10
# name -> (SwapRenderer arguments, TrackerConfig arguments)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "current": ({}, {}),
    "mesh-lids": ({"closing_lids": False}, {}),
    "cold-start": ({"neutral_glide": 0}, {"prime_passes": 0}),
    "before": ({"closing_lids": False, "neutral_glide": 0}, {"prime_passes": 0}),
}


def read_clip(path: Path, frames: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    try:
        while len(out) < frames:
            ok, bgr = cap.read()
            if not ok:
                break
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not out:
        raise SystemExit(f"{path}: no frame could be decoded")
    return out


def evaluate_seed(path: Path) -> int:
    """The donor seed `dicom-deid evaluate` gives this clip under its first site key, with the
    manifest benchmarks/evaluate_shared.py writes."""
    from dicom_deid.evaluate.manifest import read_manifest
    from dicom_deid.evaluate.run import donor_seed

    manifest = REPO / "benchmarks" / "manifests" / "grid.csv"
    for entry in read_manifest(manifest):
        if entry.path.name == path.name:
            return donor_seed(entry, 0)
    raise SystemExit(f"{path.name} is not in {manifest} (run evaluate_shared.py "
                     f"--sets grid --manifests-only)")


def observe(mesh, frames: list[np.ndarray]) -> list[np.ndarray | None]:
    found = []
    for rgb in frames:
        faces = mesh.landmarks(rgb)
        found.append(faces[0] if faces else None)
    return found


def clip_measures(orig_frames, orig_lm, out_frames, out_lm) -> dict:
    from dicom_deid.evaluate.appearance import box_change, flicker_ratio
    from dicom_deid.evaluate.utility import eye_aspect_ratio, mouth_aspect_ratio
    from dicom_deid.evaluate.video_metrics import blink_threshold, count_blinks, pearson

    def series(lms, fn):
        return [fn(p, "mediapipe") if p is not None else None for p in lms]

    ear_o, ear_d = series(orig_lm, eye_aspect_ratio), series(out_lm, eye_aspect_ratio)
    mar_o, mar_d = series(orig_lm, mouth_aspect_ratio), series(out_lm, mouth_aspect_ratio)
    threshold = blink_threshold(ear_o)
    flick_o, flick_d = [], []
    for i in range(1, len(orig_frames)):
        ref = orig_lm[i]
        if ref is None:
            flick_o.append(None)
            flick_d.append(None)
            continue
        x0, y0 = ref[:, :2].min(axis=0)
        x1, y1 = ref[:, :2].max(axis=0)
        box = (float(x0), float(y0), float(x1), float(y1))
        flick_o.append(box_change(orig_frames[i - 1], orig_frames[i], box))
        flick_d.append(box_change(out_frames[i - 1], out_frames[i], box))
    return {
        "ear_r": pearson(ear_o, ear_d)[0],
        "mar_r": pearson(mar_o, mar_d)[0],
        "blinks_original": count_blinks(ear_o, threshold),
        "blinks_deidentified": count_blinks(ear_d, threshold),
        "flicker_ratio": flicker_ratio(flick_o, flick_d),
        "flicker_ratio_first": flicker_ratio(flick_o[:FIRST_FRAMES], flick_d[:FIRST_FRAMES]),
        "flicker_first_frames": [None if d is None or o is None or o < 1e-6 else round(d / o, 3)
                                 for o, d in zip(flick_o[:FIRST_FRAMES], flick_d[:FIRST_FRAMES],
                                                 strict=True)],
        "ear_original": ear_o,
        "ear_deidentified": ear_d,
    }


def summarise(clips: list[dict]) -> dict:
    from dicom_deid.evaluate.video_metrics import pearson

    def mean(key):
        values = [c[key] for c in clips if c[key] is not None]
        return round(float(np.mean(values)), 4) if values else None

    pooled = pearson([e for c in clips for e in c["ear_original"]],
                     [e for c in clips for e in c["ear_deidentified"]])[0]
    return {
        "ear_r": mean("ear_r"),
        "ear_r_pooled": round(pooled, 4) if pooled is not None else None,
        "ear_r_worst": round(min(c["ear_r"] for c in clips if c["ear_r"] is not None), 4),
        "mar_r": mean("mar_r"),
        "blinks_original": sum(c["blinks_original"] for c in clips),
        "blinks_deidentified": sum(c["blinks_deidentified"] for c in clips),
        "flicker_ratio": mean("flicker_ratio"),
        "flicker_ratio_first": mean("flicker_ratio_first"),
    }


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=75)
    parser.add_argument("--seeds", default="0,1",
                        help="donor seeds, or 'evaluate': each clip's donor under evaluate's "
                             "first site key (as `dicom-deid evaluate --keys 1` renders it)")
    parser.add_argument("--variants", default="current,mesh-lids")
    parser.add_argument("--clips", default="", help="clip names without .mpg (default: all)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    from dicom_deid.evaluate.observer import StaticMesh
    from dicom_deid.faces.replacer import FaceReplacer
    from dicom_deid.faces.swap import SwapRenderer
    from dicom_deid.faces.tracker import TrackerConfig

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    evaluate_seeds = args.seeds.strip() == "evaluate"
    seeds = [] if evaluate_seeds else [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = {c.strip() for c in args.clips.split(",") if c.strip()}
    paths = sorted(p for p in GRID.glob("*.mpg") if not wanted or p.stem in wanted)
    if not paths:
        raise SystemExit(f"no GRID clip found under {GRID}")
    mesh = StaticMesh()
    per_variant: dict[str, list[dict]] = {v: [] for v in variants}
    start = time.monotonic()
    for path in paths:
        frames = read_clip(path, args.frames)
        orig_lm = observe(mesh, frames)
        for variant in variants:
            for seed in ([evaluate_seed(path)] if evaluate_seeds else seeds):
                swap_args, tracker_args = VARIANTS[variant]
                renderer = SwapRenderer(donor_seed=seed, shape=1.0, **swap_args)
                replacer = FaceReplacer("swap", shape=1.0, donor_seed=seed, fps=25.0,
                                        leak_check=False, renderer=renderer,
                                        tracker_config=TrackerConfig(**tracker_args))
                with replacer:
                    outs = [replacer.process(f) for f in frames]
                measures = clip_measures(frames, orig_lm, outs, observe(mesh, outs))
                measures.update(clip=path.stem, seed=seed)
                per_variant[variant].append(measures)
                print(f"{path.stem} {variant:10s} seed {seed}: EAR r {measures['ear_r']:.3f}, "
                      f"blinks {measures['blinks_deidentified']}/{measures['blinks_original']}, "
                      f"MAR r {measures['mar_r']:.3f}, flicker first "
                      f"{measures['flicker_ratio_first']:.3f} {measures['flicker_first_frames']}",
                      flush=True)
    result = {"frames": args.frames, "seeds": args.seeds if evaluate_seeds else seeds, "clips": [p.stem for p in paths],
              "wall_seconds": round(time.monotonic() - start, 1), "variants": {}}
    for variant, clips in per_variant.items():
        summary = summarise(clips)
        result["variants"][variant] = {"summary": summary, "clips": [
            {k: _rounded(v) for k, v in c.items()} for c in clips]}
        print(f"{variant}: {json.dumps(summary)}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
