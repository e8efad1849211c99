#!/usr/bin/env python
"""mask3d per site key: privacy, linkage and expression on the London set, eyes on GRID.

A quick measurement for the mask work (shared/EVALUATION.md protocol, the evaluation's own
observers: dlib descriptors with its upsampling rule, MediaPipe face mesh per frame). London
photos go through the renderer alone on the landmarks MediaPipe finds on the original (with
--replacer through `FaceReplacer("mask3d")`, tracker and leak check, about twice the time);
GRID clips always through `FaceReplacer`:

- London (51 identities), for each key: every capture is its own study, seed =
  key.integer("donor", capture path) as `pixel_stage.donor_seed` derives it from the study.
  rank-1: gallery = the neutral originals, probe = the rendered smiling capture.
  linkage rank-1: gallery = the rendered neutral captures, probe = the rendered smiling ones.
  leaks: the rendered capture within dlib's 0.6 of its own original.
- Expression (London): a person's neutral and smiling captures rendered as one study (one
  seed), landmarks found on each output by MediaPipe; the smiling face aligned to the neutral
  one by a similarity on stable points (eye corners, nose bridge), normalised by the outer eye
  distance; cosine and amplitude of the displacement of the expression points (lips, brows,
  eyelids) against the originals'; mouth widening (corner to corner) and corner lift (the
  corners' height in the eye/nose frame) kept, as ratios of the pooled means.
- GRID (6 clips, first --frames frames): eye aspect ratio series on original and output
  (evaluate's blink rule and Pearson r).

    .venv/bin/python benchmarks/mask3d_quality.py [--keys 3] [--only 001,003] [--grid]
        [--knob mask3d.PER_STUDY_SHAPE=false]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.evaluate.observer import Models  # noqa: E402
from dicom_deid.evaluate.utility import eye_aspect_ratio  # noqa: E402
from dicom_deid.evaluate.video_metrics import blink_threshold, count_blinks, pearson  # noqa: E402
from dicom_deid.faces import FaceReplacer, mesh  # noqa: E402
from dicom_deid.faces.mask3d import Mask3DRenderer  # noqa: E402
from dicom_deid.header.keys import SiteKey  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
LONDON = SHARED / "faces" / "london"
STABLE = (33, 133, 263, 362, 168, 6, 197)
LIP_POINTS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181,
              91, 146) + mesh.INNER_LIPS_UPPER + mesh.INNER_LIPS_LOWER[1:-1]
BROW_POINTS = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107, 276, 283, 282, 295, 285, 300, 293, 334,
               296, 336)
LID_POINTS = mesh.RIGHT_EYE_UPPER[1:-1] + mesh.LEFT_EYE_UPPER[1:-1]
EXPRESSION = tuple(dict.fromkeys(LIP_POINTS + BROW_POINTS + LID_POINTS))


def bench_key(index: int) -> SiteKey:
    """Fixed benchmark keys (not secrets: anyone can recompute these numbers)."""
    return SiteKey(hashlib.sha256(f"dicom-deid mask3d benchmark key {index}".encode()).digest())


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def render(rgb: np.ndarray, seed: int, landmarks: np.ndarray | None) -> np.ndarray:
    """One capture as one study: the renderer alone on the original's landmarks (the fast
    default), or the whole `FaceReplacer` (tracker, leak check) when ``landmarks`` is None."""
    if landmarks is not None:
        return Mask3DRenderer(donor_seed=seed).render(rgb, landmarks.astype(np.float32))
    with FaceReplacer("mask3d", donor_seed=seed, fps=25.0) as rep:
        out = rep.process(rgb)
        rep.close()
    return out


def aligned_displacement(neutral: np.ndarray, smiling: np.ndarray) -> tuple[np.ndarray, float,
                                                                             float]:
    """(expression displacement / iod, mouth widening / iod, corner lift / iod)."""
    fit = mesh.fit_similarity(smiling[list(STABLE), :2], neutral[list(STABLE), :2])
    s = fit.apply(smiling[:, :2])
    n = neutral[:, :2]
    iod = float(np.linalg.norm(n[33] - n[263]))
    disp = (s[list(EXPRESSION)] - n[list(EXPRESSION)]).reshape(-1) / iod
    widen = (np.linalg.norm(s[61] - s[291]) - np.linalg.norm(n[61] - n[291])) / iod
    lift = -float(((s[61, 1] - n[61, 1]) + (s[291, 1] - n[291, 1])) / 2) / iod
    return disp, float(widen), lift


def london(keys: list[int], only: set[str], models: Models, save: Path | None,
           replacer: bool, cache: Path | None) -> list[dict]:
    ids = sorted(p.name.split("_")[0] for p in (LONDON / "neutral").glob("*_03.jpg"))
    ids = [i for i in ids if (LONDON / "smiling" / f"{i}_08.jpg").is_file()]
    paths = {(i, "n"): LONDON / "neutral" / f"{i}_03.jpg" for i in ids}
    paths.update({(i, "s"): LONDON / "smiling" / f"{i}_08.jpg" for i in ids})
    probes = [i for i in ids if not only or i in only]
    orig: dict = np.load(cache, allow_pickle=True).item() if cache and cache.exists() else {}
    for i in ids:
        for kind in ("n", "s"):
            if (kind == "s" and i not in probes) or (i, kind) in orig:
                continue
            rgb = read_rgb(paths[(i, kind)])
            models.dlib.upsample = models.dlib_upsample(rgb)
            face = models.dlib.analyse(rgb)
            meshes = models.mesh.landmarks(rgb)
            orig[(i, kind)] = (None if face is None else face.descriptor,
                               meshes[0] if meshes else None)
    if cache:
        np.save(cache, orig, allow_pickle=True)
    gallery_ids = [i for i in ids if orig[(i, "n")][0] is not None]
    gallery = np.stack([orig[(i, "n")][0] for i in gallery_ids])
    rows = []
    for k in keys:
        key = bench_key(k)
        t0 = time.time()
        desc: dict = {}
        meshes_out: dict = {}
        leaks = 0
        for i in probes:
            for kind in ("n", "s"):
                rel = str(paths[(i, kind)].relative_to(SHARED))
                lm = None if replacer else orig[(i, kind)][1]
                out = render(read_rgb(paths[(i, kind)]), key.integer("donor", rel, 2**32), lm)
                models.dlib.upsample = models.dlib_upsample(out)
                face = models.dlib.analyse(out)
                desc[(i, kind)] = None if face is None else face.descriptor
                own = orig[(i, kind)][0]
                if face is not None and own is not None and \
                        np.linalg.norm(face.descriptor - own) < 0.6:
                    leaks += 1
            # Expression: one study for both captures (the geometry does not depend on the key:
            # measured with the first key only).
            if k != keys[0]:
                continue
            seed = key.integer("donor", f"london-{i}", 2**32)
            for kind in ("n", "s"):
                lm = None if replacer else orig[(i, kind)][1]
                out = render(read_rgb(paths[(i, kind)]), seed, lm)
                found = models.mesh.landmarks(out)
                meshes_out[(i, kind)] = found[0] if found else None
                if save is not None and k == keys[0] and len(probes) <= 12:
                    save.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(save / f"{i}_{kind}.jpg"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        r1 = link = noface = 0
        link_ranks = []
        linked = []
        link_ids = [i for i in probes if desc[(i, "n")] is not None]
        link_gallery = np.stack([desc[(i, "n")] for i in link_ids]) if link_ids else None
        for i in probes:
            d = desc[(i, "s")]
            if d is None:
                noface += 1
                continue
            r1 += gallery_ids[int(np.argmin(np.linalg.norm(gallery - d, axis=1)))] == i
            if link_gallery is not None:
                dist = np.linalg.norm(link_gallery - d, axis=1)
                link += link_ids[int(np.argmin(dist))] == i
                if link_ids[int(np.argmin(dist))] == i:
                    linked.append(i)
                if i in link_ids:
                    # The true match's rank (chance: the gallery's middle), a less noisy
                    # measure of linkage than the rank-1 hits of 51 probes.
                    link_ranks.append(1 + int(np.sum(dist < dist[link_ids.index(i)])))
        cos, amp, widen_o, widen_d, lift_o, lift_d = [], [], [], [], [], []
        # Held out: the expression model was trained on the even-numbered London identities.
        for i in (probes if k == keys[0] else []):
            if int(i) % 2 == 0:
                continue
            on, os_ = orig[(i, "n")][1], orig[(i, "s")][1]
            dn, ds = meshes_out[(i, "n")], meshes_out[(i, "s")]
            if on is None or os_ is None or dn is None or ds is None:
                continue
            vo, wo, lo = aligned_displacement(on, os_)
            vd, wd, ld = aligned_displacement(dn, ds)
            cos.append(float(vo @ vd / max(np.linalg.norm(vo) * np.linalg.norm(vd), 1e-12)))
            amp.append(float(np.linalg.norm(vd) / max(np.linalg.norm(vo), 1e-12)))
            widen_o.append(wo)
            widen_d.append(wd)
            lift_o.append(lo)
            lift_d.append(ld)
        n = len(probes)
        row = dict(key=k, probes=n, gallery=len(gallery_ids), chance=1 / len(gallery_ids),
                   rank1=r1 / n, linkage_rank1=link / n, linkage_gallery=len(link_ids),
                   linkage_mean_rank=float(np.mean(link_ranks)) if link_ranks else None,
                   linked_identities=linked,
                   no_face=noface / n, leaks=leaks,
                   expression_pairs_held_out=len(cos),
                   expression_cosine=float(np.mean(cos)) if cos else None,
                   expression_amplitude=float(np.median(amp)) if amp else None,
                   widening_kept=float(np.mean(widen_d) / np.mean(widen_o)) if cos else None,
                   corner_lift_kept=float(np.mean(lift_d) / np.mean(lift_o)) if cos else None,
                   seconds=round(time.time() - t0, 1))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def grid(frames: int, models: Models, seed: int) -> list[dict]:
    rows = []
    for clip in sorted((SHARED / "video" / "grid").glob("*.mpg")):
        cap = cv2.VideoCapture(str(clip))
        ear_o, ear_d = [], []
        change_o, change_d = [], []
        previous = None
        with FaceReplacer("mask3d", donor_seed=seed, fps=25.0) as rep:
            while len(ear_o) < frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                out = rep.process(rgb)
                box = None
                for series, image in ((ear_o, rgb), (ear_d, out)):
                    found = models.mesh.landmarks(image)
                    series.append(eye_aspect_ratio(found[0], "mediapipe") if found else None)
                    if image is rgb and found:
                        x0, y0 = np.maximum(found[0][:, :2].min(axis=0).astype(int), 0)
                        x1, y1 = found[0][:, :2].max(axis=0).astype(int)
                        box = (slice(y0, y1), slice(x0, x1))
                # Flicker: mean frame-to-frame change inside the original's face box.
                if previous is not None and box is not None:
                    for store, now, before in ((change_o, rgb, previous[0]),
                                               (change_d, out, previous[1])):
                        store.append(float(cv2.absdiff(now[box], before[box]).mean()))
                previous = (rgb, out)
            report = rep.close()
        cap.release()
        r, mae, n = pearson(ear_o, ear_d)
        thr = blink_threshold(ear_o)
        row = dict(clip=clip.name, frames=len(ear_o), ear_r=r, ear_mae=mae, paired=n,
                   blinks_original=count_blinks(ear_o, thr),
                   blinks_deidentified=count_blinks(ear_d, thr), leaks=report.leaks,
                   flicker_ratio=float(np.mean(change_d) / max(np.mean(change_o), 1e-6))
                   if change_o else None,
                   flicker_ratio_first10=float(np.mean(change_d[:10]) /
                                               max(np.mean(change_o[:10]), 1e-6))
                   if change_o else None)
        print(json.dumps(row), flush=True)
        row["ear_original"], row["ear_deidentified"] = ear_o, ear_d
        rows.append(row)
    pooled = pearson([e for r in rows for e in r["ear_original"]],
                     [e for r in rows for e in r["ear_deidentified"]])[0]
    summary = dict(ear_r_mean=float(np.mean([r["ear_r"] for r in rows if r["ear_r"] is not None])),
                   ear_r_pooled=pooled,
                   blinks_original=sum(r["blinks_original"] for r in rows),
                   blinks_deidentified=sum(r["blinks_deidentified"] for r in rows),
                   leaks=sum(r["leaks"] for r in rows))
    print(json.dumps(summary), flush=True)
    rows.append(summary)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=3, help="number of benchmark keys")
    ap.add_argument("--only", default="", help="comma-separated London identities to probe")
    ap.add_argument("--grid", action="store_true", help="also the GRID eye measurement")
    ap.add_argument("--grid-only", action="store_true")
    ap.add_argument("--frames", type=int, default=75)
    ap.add_argument("--save", type=Path, help="write the rendered London probes here (<= 12 ids)")
    ap.add_argument("--output", type=Path, help="write all rows as JSON here")
    ap.add_argument("--cache", type=Path, help="keep the originals' descriptors and landmarks "
                    "here (.npy) between runs")
    ap.add_argument("--replacer", action="store_true",
                    help="London through FaceReplacer (tracker, leak check) instead of the "
                         "renderer on the original's landmarks")
    ap.add_argument("--knob", action="append", default=[], metavar="MODULE.NAME=JSON",
                    help="set a dicom_deid.faces.mask3d or mask_surface constant (e.g. "
                         "mask3d.PER_STUDY_SHAPE=false); repeatable")
    args = ap.parse_args()
    from dicom_deid.faces import mask3d, mask_surface

    for item in args.knob:
        name, _, value = item.partition("=")
        module, _, const = name.partition(".")
        target = {"mask3d": mask3d, "mask_surface": mask_surface}.get(module)
        if target is None or not const.isupper() or not hasattr(target, const):
            raise SystemExit(f"--knob {item!r}: not mask3d.NAME=JSON or mask_surface.NAME=JSON")
        parsed = json.loads(value)
        setattr(target, const, tuple(parsed) if isinstance(parsed, list) else parsed)
    only = {s for s in args.only.split(",") if s}
    models = Models()
    result: dict = {}
    if not args.grid_only:
        rows = london(list(range(args.keys)), only, models, args.save, args.replacer,
                      args.cache)
        result["london"] = rows
        worst = max(rows, key=lambda r: max(r["rank1"], r["linkage_rank1"]))
        result["london_worst_key"] = worst["key"]
        summary = {m: float(np.mean([r[m] for r in rows]))
                   for m in ("rank1", "linkage_rank1", "linkage_mean_rank")}
        print(json.dumps(dict(pooled=summary, worst_key=worst["key"])), flush=True)
    if args.grid or args.grid_only:
        result["grid"] = grid(args.frames, models, bench_key(0).integer("donor", "grid", 2**32))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
