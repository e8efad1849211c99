#!/usr/bin/env python
"""Which region of a swapped face carries the linkage? (issue 15, swap privacy)

Renders the London neutral and smiling photos with swap as `dicom-deid evaluate` does (same
evaluation keys, one study per capture, so each capture gets its own donor), then runs the
linkage attack of evaluate (gallery: the swapped neutral photos; probes: the swapped smiling
photos of the same people) on copies of the outputs with one region replaced by flat grey.
dlib's detector and 68-point shape are taken from the unaltered output, so only what the
recogniser reads changes. A region whose greying lowers the linkage carries it.

Besides rank-1 hits (noisy: one hit is 2 points of 51) it reports the mean rank of the true
identity and the mean z-score of the true pair's distance among the probe's distances to all
gallery identities (more negative: linked more strongly); both use every probe.

The renders are cached under --cache (outside the repository: they are made from test data and
must not be committed); only aggregates and dataset identity labels are written to --output.

    nice -n 5 .venv/bin/python benchmarks/swap_linkage_regions.py --keys 0,1,2 \
        --output benchmarks/results/<date>/swap_linkage_regions.json [--knob NAME=JSON]
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
GREY = 128
# MediaPipe mesh indices of the regions (outer lip contour, eye contours, nose).
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40,
        185)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
ABLATIONS = ("full", "face_only", "context_only", "inner_only", "no_outline", "no_mouth",
             "no_eyes", "grey_face")


def _hull(shape: tuple[int, ...], pts: np.ndarray, grow: int = 0) -> np.ndarray:
    import cv2

    m = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(pts[:, :2].astype(np.int32)), 255)
    if grow:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1,) * 2)
        m = cv2.dilate(m, k) if grow > 0 else cv2.erode(m, k)
    return m > 0


def ablate(img: np.ndarray, lm: np.ndarray, name: str) -> np.ndarray:
    """``img`` with the region ``name`` greyed (``lm``: the original photo's face mesh)."""
    import cv2

    from dicom_deid.faces import mesh

    if name == "full":
        return img
    iod = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
    out = img.copy()
    oval = lm[list(mesh.FACE_OVAL)]
    face = _hull(img.shape, oval)
    if name == "face_only":          # hair, ears, neck and background greyed
        out[~face] = GREY
    elif name == "context_only":     # the face (inside the mesh outline) greyed
        out[face] = GREY
    elif name == "inner_only":       # also a band of 0.25 IOD inside the outline greyed
        out[~_hull(img.shape, oval, -int(0.25 * iod))] = GREY
    elif name == "no_outline":       # a band of +-0.15 IOD around the outline greyed
        band = _hull(img.shape, oval, int(0.15 * iod)) & ~_hull(img.shape, oval, -int(0.15 * iod))
        out[band] = GREY
    elif name == "no_mouth":
        out[_hull(img.shape, lm[list(LIPS)], int(0.12 * iod))] = GREY
    elif name == "no_eyes":
        out[_hull(img.shape, lm[list(RIGHT_EYE)], int(0.1 * iod))
            | _hull(img.shape, lm[list(LEFT_EYE)], int(0.1 * iod))] = GREY
    elif name == "grey_face":        # colour removed everywhere, lightness kept
        out = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    else:
        raise ValueError(f"unknown ablation {name}")
    return out


def render_all(entries: list, keys: list[int], cache: Path, knobs: dict) -> None:
    """Swap every capture under every key as evaluate does; cache PNGs and original meshes."""
    import cv2

    from dicom_deid.evaluate.manifest import open_source
    from dicom_deid.evaluate.run import Settings, make_replacer, study_of
    from dicom_deid.faces import mesh, swap

    for name, value in knobs.items():
        setattr(swap, name, value)
    settings = Settings(methods=["swap"], shape=1.0)
    cache.mkdir(parents=True, exist_ok=True)
    for e in entries:
        frame = next(open_source(e.path).frames)
        lm_file = cache / f"lm_{e.path.stem}.npy"
        if not lm_file.exists():
            lm = mesh.landmarks_from_image(frame)
            np.save(lm_file, lm if lm is not None else np.zeros((0, 3), np.float32))
        for k in keys:
            out_file = cache / f"k{k}_{e.path.stem}.png"
            if out_file.exists():
                continue
            replacer = make_replacer("swap", settings, 25.0, k, study_of(e))
            try:
                out = next(iter(replacer.stream([frame])))[1]
            finally:
                replacer.close()
            cv2.imwrite(str(out_file), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


def _dlib_shape(detector, predictor, img: np.ndarray):
    """dlib's 68-point shape of the largest face, detected at half size (4x faster than
    evaluate's full size with upsampling; the London faces are 200 px and more), else None."""
    import dlib

    small = np.ascontiguousarray(img[::2, ::2])
    rects = sorted(detector(small, 0), key=lambda r: -r.width() * r.height())
    if rects:
        r = rects[0]
        return predictor(img, dlib.rectangle(2 * r.left(), 2 * r.top(), 2 * r.right(),
                                             2 * r.bottom()))
    rects = sorted(detector(img, 1), key=lambda r: -r.width() * r.height())
    return predictor(img, rects[0]) if rects else None


def linkage(desc: dict[tuple[str, str], np.ndarray | None], ids: list[str]) -> dict:
    """evaluate's linkage attack (`evaluate.privacy.identify`) on one key's descriptors:
    rank-1 hits, mean rank (an unidentified probe counts as last) and the mean z-score of the
    true pair's distance among the probe's distances to the gallery."""
    from dicom_deid.evaluate.privacy import identify

    found = identify([(i, desc[(i, "gallery")]) for i in ids],
                     [(i, desc[(i, "probe")]) for i in ids])
    gallery = [i for i in ids if desc[(i, "gallery")] is not None]
    stack = np.stack([desc[(i, "gallery")] for i in gallery])
    zs = []
    for i, rank in zip(ids, found.ranks, strict=True):
        probe = desc[(i, "probe")]
        if np.isfinite(rank) and probe is not None:
            dist = np.linalg.norm(stack - probe, axis=1)
            j = gallery.index(i)
            others = np.delete(dist, j)
            zs.append(float((dist[j] - others.mean()) / others.std()))
    ranks = [r if np.isfinite(r) else float(len(gallery)) for r in found.ranks]
    linked = [i for i, r in zip(ids, found.ranks, strict=True) if r <= 1]
    return {"hits": len(linked), "probes": len(ids), "mean_rank": round(float(np.mean(ranks)), 2),
            "mean_z": round(float(np.mean(zs)), 3), "linked": linked}


def parse_knobs(items: list[str]) -> dict:
    """``NAME=JSON`` command-line items as a dict."""
    knobs = {}
    for item in items:
        name, _, value = item.partition("=")
        knobs[name] = json.loads(value)
    return knobs


def paired_identities(entries: list) -> tuple[dict[tuple[str, str], str], list[str]]:
    """File stem per (identity, role), and the identities with both a gallery and a probe."""
    roles = {(e.identity, e.role): e.path.stem for e in entries}
    ids = sorted({e.identity for e in entries
                  if (e.identity, "gallery") in roles and (e.identity, "probe") in roles})
    return roles, ids


def dlib_models() -> tuple:
    """dlib's face detector, 68-point shape predictor and recogniser (evaluate's)."""
    import dlib
    import face_recognition_models as frm

    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(frm.pose_predictor_model_location()),
            dlib.face_recognition_model_v1(frm.face_recognition_model_location()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="0,1,2")
    parser.add_argument("--ablations", default=",".join(ABLATIONS))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/swap_linkage_regions"))
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=JSON",
                        help="set a dicom_deid.faces.swap constant for the renders")
    args = parser.parse_args()
    import cv2

    from dicom_deid.evaluate.manifest import read_manifest

    knobs = parse_knobs(args.knob)
    keys = [int(k) for k in args.keys.split(",")]
    ablations = args.ablations.split(",")
    entries = read_manifest(MANIFEST)
    started = time.monotonic()
    render_all(entries, keys, args.cache, knobs)
    rendered_s = time.monotonic() - started
    roles, ids = paired_identities(entries)
    detector, predictor, recogniser = dlib_models()
    results: dict[str, dict] = {}
    for k in keys:
        desc: dict[str, dict] = {a: {} for a in ablations}
        for ident in ids:
            for role in ("gallery", "probe"):
                stem = roles[(ident, role)]
                img = np.ascontiguousarray(cv2.cvtColor(
                    cv2.imread(str(args.cache / f"k{k}_{stem}.png")), cv2.COLOR_BGR2RGB))
                lm = np.load(args.cache / f"lm_{stem}.npy")
                shape = _dlib_shape(detector, predictor, img) if len(lm) else None
                for a in ablations:
                    desc[a][(ident, role)] = None if shape is None else np.array(
                        recogniser.compute_face_descriptor(
                            np.ascontiguousarray(ablate(img, lm, a)), shape))
        for a in ablations:
            results.setdefault(a, {})[f"key{k}"] = linkage(desc[a], ids)
    for a, per_key in results.items():
        rows = list(per_key.values())
        hits, probes = sum(r["hits"] for r in rows), sum(r["probes"] for r in rows)
        per_key["pooled"] = {"hits": hits, "probes": probes,
                             "rank1": round(hits / probes, 4),
                             "mean_rank": round(float(np.mean([r["mean_rank"] for r in rows])), 2),
                             "mean_z": round(float(np.mean([r["mean_z"] for r in rows])), 3)}
        print(f"{a:13s} linkage {hits:3d}/{probes} mean rank {per_key['pooled']['mean_rank']:5.1f}"
              f" z {per_key['pooled']['mean_z']:+.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "what": "linkage of swapped London captures with one region greyed before dlib",
        "keys": keys, "knobs": knobs, "render_seconds": round(rendered_s, 1),
        "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
