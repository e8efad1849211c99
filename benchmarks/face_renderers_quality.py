#!/usr/bin/env python
"""Privacy and utility of the swap and mask3d renderers, per shared/EVALUATION.md.

A quick measurement for the renderer work, independent of `dicom-deid evaluate`:

- London set (51 identities): gallery = the neutral originals, probes = the smiling photos after
  rendering (a different donor seed per probe, as per study). dlib's ResNet descriptor, rank-1 and
  rank-5 identification (no face found = not re-identified, counted separately); for mask3d also
  the linkage attack (gallery = rendered neutral photos, probes = rendered smiling photos).
- Utility on the same probes: MediaPipe 478-point NME and dlib 68-point NME, in percent of the
  outer-eye-corner distance, between landmarks found on the original and on the output; the
  detection rate; and the noise floor (the same NME after a JPEG quality-75 re-encode).
- GRID clips (mask3d, swap): eye aspect ratio series on the original and on the output, Pearson r.

    .venv/bin/python benchmarks/face_renderers_quality.py --methods swap:0,swap:0.5,mask3d
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.faces import mesh  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


class Dlib:
    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.recogniser = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def analyse(self, rgb: np.ndarray):
        """(descriptor, 68 landmarks) of the largest face dlib finds, or (None, None)."""
        found = self.detector(rgb, 1)
        if not found:
            return None, None
        rect = max(found, key=lambda r: r.width() * r.height())
        shape = self.predictor(rgb, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        desc = np.asarray(self.recogniser.compute_face_descriptor(rgb, shape), np.float64)
        return desc, pts


def nme(a: np.ndarray | None, b: np.ndarray | None, corners: tuple[int, int]) -> float | None:
    if a is None or b is None:
        return None
    iod = np.linalg.norm(a[corners[0], :2] - a[corners[1], :2])
    return float(np.linalg.norm(a[:, :2] - b[:, :2], axis=1).mean() / iod * 100)


def identify(gallery: np.ndarray, gallery_ids: list[str], probe: np.ndarray | None,
             truth: str) -> tuple[bool, bool]:
    if probe is None:
        return False, False
    order = np.argsort(np.linalg.norm(gallery - probe, axis=1))
    ranked = [gallery_ids[i] for i in order]
    return ranked[0] == truth, truth in ranked[:5]


def make_renderer(spec: str, seed: int, model: str | None):
    name, _, arg = spec.partition(":")
    if name == "swap":
        from dicom_deid.faces.swap import SwapRenderer

        opts = dict(kv.split("=") for kv in arg.split(";")[1:] if "=" in kv)
        shape = float(arg.split(";")[0] or 0)
        return SwapRenderer(donor_seed=seed, shape=shape, model_path=model,
                            eyes=opts.get("eyes", "synthetic"),
                            mouth=opts.get("mouth", "synthetic"),
                            shading_sigma=float(opts.get("sigma", 0.35)))
    if name == "mask3d":
        from dicom_deid.faces.mask3d import Mask3DRenderer

        return Mask3DRenderer(model_path=model)
    if name == "jpeg":
        return None
    raise SystemExit(f"unknown method {spec}")


def render(spec: str, renderer, rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    if spec.startswith("jpeg"):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 75])
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if spec.startswith("mask3d"):
        return renderer.render(rgb, lm, track_id=0)
    return renderer.render(rgb, lm)


def london(specs: list[str], model: str | None, only: set[str], save: Path | None,
           cache: Path) -> list[dict]:
    root = SHARED / "faces" / "london"
    neutral = sorted((root / "neutral").glob("*.jpg"))
    smiling = {p.stem.split("_")[0]: p for p in (root / "smiling").glob("*.jpg")}
    dl = Dlib()
    if cache.exists():
        data = np.load(cache, allow_pickle=True).item()
    else:
        data = {}
        for p in neutral:
            ident = p.stem.split("_")[0]
            for kind, path in (("n", p), ("s", smiling[ident])):
                rgb = read_rgb(path)
                desc, pts = dl.analyse(rgb)
                data[(ident, kind)] = dict(desc=desc, dlib68=pts,
                                           mp=mesh.landmarks_from_image(rgb))
        np.save(cache, data, allow_pickle=True)
    ids = sorted({k[0] for k in data})
    gallery = np.stack([data[(i, "n")]["desc"] for i in ids])
    results = []
    for spec in specs:
        t0 = time.time()
        r1 = r5 = found = mp_found = 0
        link1 = 0
        nmes, dnmes, n = [], [], 0
        rendered_desc: dict[tuple[str, str], np.ndarray | None] = {}
        for k, ident in enumerate(ids):
            if only and ident not in only:
                continue
            kinds = ("s", "n") if spec.startswith("mask3d") else ("s",)
            for kind in kinds:
                folder = "smiling" if kind == "s" else "neutral"
                path = smiling[ident] if kind == "s" else root / folder / f"{ident}_03.jpg"
                rgb = read_rgb(path)
                lm = data[(ident, kind)]["mp"]
                renderer = make_renderer(spec, 1000 + k * 2 + (kind == "n"), model)
                out = render(spec, renderer, rgb, lm)
                desc, pts = dl.analyse(out)
                rendered_desc[(ident, kind)] = desc
                if kind != "s":
                    continue
                n += 1
                a, b = identify(gallery, ids, desc, ident)
                r1 += a
                r5 += b
                found += desc is not None
                lm_out = mesh.landmarks_from_image(out)
                mp_found += lm_out is not None
                v = nme(lm, lm_out, mesh.OUTER_EYE_CORNERS)
                if v is not None:
                    nmes.append(v)
                v = nme(data[(ident, kind)]["dlib68"], pts, (36, 45))
                if v is not None:
                    dnmes.append(v)
                if save is not None and k < 6:
                    save.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(save / f"{spec.replace(':', '_').replace(';', '_')}"
                                f"_{ident}.jpg"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        row = dict(method=spec, probes=n, gallery=len(ids), chance=1 / len(ids),
                   rank1=r1 / n, rank5=r5 / n, dlib_face_found=found / n,
                   mediapipe_face_found=mp_found / n,
                   mediapipe_nme=float(np.mean(nmes)) if nmes else None,
                   mediapipe_nme_p90=float(np.percentile(nmes, 90)) if nmes else None,
                   dlib68_nme=float(np.mean(dnmes)) if dnmes else None,
                   seconds=round(time.time() - t0, 1))
        if spec.startswith("mask3d"):
            keys = [i for i in ids if (not only or i in only)]
            gal = [(i, rendered_desc[(i, "n")]) for i in keys if rendered_desc[(i, "n")] is not None]
            if gal:
                gdesc = np.stack([g[1] for g in gal])
                gids = [g[0] for g in gal]
                for i in keys:
                    a, _ = identify(gdesc, gids, rendered_desc[(i, "s")], i)
                    link1 += a
            row["linkage_rank1"] = link1 / n
            row["linkage_gallery"] = len(gal)
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def grid(specs: list[str], model: str | None, frames: int) -> list[dict]:
    import mediapipe as mp

    results = []
    clips = sorted((SHARED / "video" / "grid").glob("*.mpg"))
    for spec in specs:
        rs, found_all = [], []
        for clip in clips:
            cap = cv2.VideoCapture(str(clip))
            renderer = make_renderer(spec, 7, model)
            fm_in = mp.solutions.face_mesh.FaceMesh(refine_landmarks=True, max_num_faces=1)
            fm_out = mp.solutions.face_mesh.FaceMesh(refine_landmarks=True, max_num_faces=1)
            ear_in, ear_out, found = [], [], 0
            count = 0
            while count < frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                count += 1
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                res = fm_in.process(rgb)
                if not res.multi_face_landmarks:
                    continue
                h, w = rgb.shape[:2]
                lm = np.array([(p.x * w, p.y * h, p.z * w)
                               for p in res.multi_face_landmarks[0].landmark], np.float32)
                out = render(spec, renderer, rgb, lm)
                res2 = fm_out.process(out)
                if not res2.multi_face_landmarks:
                    continue
                found += 1
                lm2 = np.array([(p.x * w, p.y * h, p.z * w)
                                for p in res2.multi_face_landmarks[0].landmark], np.float32)
                ear_in.append(mesh.eye_aspect_ratio(lm))
                ear_out.append(mesh.eye_aspect_ratio(lm2))
            r = float(np.corrcoef(ear_in, ear_out)[0, 1]) if len(ear_in) > 2 else float("nan")
            rs.append(r)
            found_all.append(found / max(count, 1))
            print(json.dumps(dict(method=spec, clip=clip.name, frames=count, found=found,
                                  ear_r=r, ear_in_range=[float(np.min(ear_in)),
                                                         float(np.max(ear_in))])), flush=True)
        row = dict(method=spec, clips=len(clips), ear_r_mean=float(np.nanmean(rs)),
                   ear_r_min=float(np.nanmin(rs)), face_found=float(np.mean(found_all)))
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="jpeg,swap:0,mask3d")
    ap.add_argument("--model", help="donor model file (default: the committed one)")
    ap.add_argument("--only", default="", help="comma-separated identities to probe")
    ap.add_argument("--grid", action="store_true", help="also the GRID EAR measurement")
    ap.add_argument("--grid-only", action="store_true")
    ap.add_argument("--frames", type=int, default=75)
    ap.add_argument("--save", type=Path, help="write a few rendered probes here")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dicom_deid_london_cache.npy"))
    args = ap.parse_args()
    specs = args.methods.split(",")
    only = {s for s in args.only.split(",") if s}
    if not args.grid_only:
        london(specs, args.model, only, args.save, args.cache)
    if args.grid or args.grid_only:
        grid([s for s in specs if not s.startswith("jpeg")], args.model, args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
