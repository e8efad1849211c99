#!/usr/bin/env python
"""Which region of a mask3d output carries the linkage? (issue 15, mask3d privacy)

As benchmarks/swap_linkage_regions.py, for mask3d: the London neutral and smiling photos are
rendered as `dicom-deid evaluate` renders them (its keys, one study per capture), and the linkage
attack (gallery: the masked neutral photos; probes: the masked smiling photos) is run on copies
with one region replaced by flat grey before dlib's recogniser (dlib's shape is taken from the
unaltered output). Regions are judged on the output itself: the pixels the mask changed
("mask") and the rest ("context").

- full: the output as it is.
- mask_only: everything the mask did not change greyed (hair, ears, neck, shirt, background).
- context_only: the mask's pixels greyed.
- no_edge: a band of 0.15 eye distances either side of the mask's edge greyed.
- mask_only_aligned: as mask_only, with dlib's detector and shape run on the greyed copy: what
  surrounds the mask moves dlib's jaw points and so the aligned chip, although the chip itself
  lies inside the mask.

Renders are cached under --cache (outside the repository: made from test data); only aggregates
and identity labels go to --output.

    nice -n 19 .venv/bin/python benchmarks/mask3d_linkage_regions.py --keys 0 \
        --output /tmp/x.json [--knob mask3d.NAME=JSON] [--knob mask_surface.NAME=JSON]
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
sys.path.insert(0, str(REPO / "benchmarks"))

from swap_linkage_regions import (  # noqa: E402
    MANIFEST,
    _dlib_shape,
    dlib_models,
    linkage,
    paired_identities,
    parse_knobs,
)

GREY = 128
ABLATIONS = ("full", "mask_only", "context_only", "no_edge", "mask_only_aligned")


def ablate(img: np.ndarray, original: np.ndarray, iod: float, name: str) -> np.ndarray:
    import cv2

    if name == "full":
        return img
    changed = np.any(img != original, axis=2).astype(np.uint8)
    # The mask's region: changed pixels, closed over the few the mask left equal by chance.
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    region = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, k) > 0
    out = img.copy()
    if name in ("mask_only", "mask_only_aligned"):
        out[~region] = GREY
    elif name == "context_only":
        out[region] = GREY
    elif name == "no_edge":
        w = max(int(0.15 * iod), 1)
        kk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * w + 1,) * 2)
        r8 = region.astype(np.uint8)
        band = (cv2.dilate(r8, kk) > 0) & ~(cv2.erode(r8, kk) > 0)
        out[band] = GREY
    else:
        raise ValueError(f"unknown ablation {name}")
    return out


def set_knobs(knobs: dict) -> None:
    from dicom_deid.faces import mask3d, mask_surface

    modules = {"mask3d": mask3d, "mask_surface": mask_surface}
    for name, value in knobs.items():
        mod, _, const = name.partition(".")
        if mod not in modules or not hasattr(modules[mod], const):
            raise SystemExit(f"--knob {name}: not mask3d.NAME or mask_surface.NAME")
        setattr(modules[mod], const, tuple(value) if isinstance(value, list) else value)


def render_all(entries: list, keys: list[int], cache: Path) -> None:
    import cv2

    from dicom_deid.evaluate.manifest import open_source
    from dicom_deid.evaluate.run import Settings, make_replacer, study_of
    from dicom_deid.faces import mesh

    settings = Settings(methods=["mask3d"], shape=1.0)
    cache.mkdir(parents=True, exist_ok=True)
    for e in entries:
        frame = next(open_source(e.path).frames)
        orig_file = cache / f"orig_{e.path.stem}.png"
        if not orig_file.exists():
            cv2.imwrite(str(orig_file), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            lm = mesh.landmarks_from_image(frame)
            np.save(cache / f"lm_{e.path.stem}.npy",
                    lm if lm is not None else np.zeros((0, 3), np.float32))
        for k in keys:
            out_file = cache / f"k{k}_{e.path.stem}.png"
            if out_file.exists():
                continue
            replacer = make_replacer("mask3d", settings, 25.0, k, study_of(e))
            try:
                out = next(iter(replacer.stream([frame])))[1]
            finally:
                replacer.close()
            cv2.imwrite(str(out_file), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="0")
    parser.add_argument("--ablations", default=",".join(ABLATIONS))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mask3d_linkage_regions"))
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--knob", action="append", default=[], metavar="MODULE.NAME=JSON",
                        help="set a mask3d or mask_surface constant for the renders")
    args = parser.parse_args()
    import cv2

    from dicom_deid.evaluate.manifest import read_manifest

    knobs = parse_knobs(args.knob)
    set_knobs(knobs)
    keys = [int(k) for k in args.keys.split(",")]
    ablations = args.ablations.split(",")
    entries = read_manifest(MANIFEST)
    started = time.monotonic()
    render_all(entries, keys, args.cache)
    rendered_s = time.monotonic() - started
    roles, ids = paired_identities(entries)
    detector, predictor, recogniser = dlib_models()
    results: dict[str, dict] = {}

    def load(name: str) -> np.ndarray:
        return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(args.cache / name)),
                                                 cv2.COLOR_BGR2RGB))

    for k in keys:
        desc: dict[str, dict] = {a: {} for a in ablations}
        for ident in ids:
            for role in ("gallery", "probe"):
                stem = roles[(ident, role)]
                img, orig = load(f"k{k}_{stem}.png"), load(f"orig_{stem}.png")
                lm = np.load(args.cache / f"lm_{stem}.npy")
                iod = float(np.linalg.norm(lm[33, :2] - lm[263, :2])) if len(lm) else 50.0
                shape = _dlib_shape(detector, predictor, img)
                for a in ablations:
                    copy = np.ascontiguousarray(ablate(img, orig, iod, a))
                    own = (_dlib_shape(detector, predictor, copy) if a.endswith("_aligned")
                           else shape)
                    desc[a][(ident, role)] = None if own is None else np.array(
                        recogniser.compute_face_descriptor(copy, own))
        for a in ablations:
            results.setdefault(a, {})[f"key{k}"] = linkage(desc[a], ids)
            r = results[a][f"key{k}"]
            print(f"key {k} {a:13s} linkage {r['hits']:3d}/{r['probes']} mean rank "
                  f"{r['mean_rank']:5.1f} z {r['mean_z']:+.3f} linked {r['linked']}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "what": "linkage of mask3d London captures with one region greyed before dlib",
        "keys": keys, "knobs": knobs, "render_seconds": round(rendered_s, 1),
        "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
