#!/usr/bin/env python
"""The routes to MediaPipe's refined 478 face points, per frame on the CPU, and how close each
is to MediaPipe's own, region by region.

Routes (each a mesh session, as the tracker uses them, one call per frame in tracking mode):

- mediapipe: FaceMesh(refine_landmarks=True) (MediaPipeFaceModels.mesh_session, the product's
  CPU default), the reference;
- attention: OnnxMesh("attention"), MediaPipe's refined model itself on ONNX Runtime;
- iris: OnnxMesh("iris"), the plain equivalent the issue names: face_landmark, then
  iris_landmark on each eye, the iris model's eye contours replacing the mesh's (as
  MediaPipe's iris pipeline does);
- none: OnnxMesh("none"), the plain 468 points, only to show what the mesh alone costs.

speed: the frames of GRID clips cropped around the face as the tracker does; every route
follows the same clip in its own session, interleaved frame by frame (order rotated each
frame), in one process at normal priority. CPU time of the process per call (all threads)
and wall per call, averaged per round (one clip), then the median over rounds; each route's
ratio to MediaPipe is taken per round (MediaPipe's CPU per frame / the route's) and its
median reported.

regions: each ONNX route's points against MediaPipe's refined points on London photos (3
tracked calls per photo) and the GRID clip frames, NME in % of the inter-ocular distance
(33-263) for all 478 points and per region: lips (the attention mesh's 80 lip points), eye
contours (2 x 16), the rest of the eye tables (brows, outer rings: 2 x 55), irises (10) and
the other 246 points. Data: London Set (DeBruine & Jones 2017, CC BY 4.0), GRID (Cooke et al.
2006, CC BY 4.0); only timings and aggregates are written.

    .venv/bin/python benchmarks/mesh_routes.py speed --rounds 8 --frames 40 \\
        --output benchmarks/results/2026-12-07/mesh_routes_speed.json
    nice -n 19 .venv/bin/python benchmarks/mesh_routes.py regions --step 4 \\
        --output benchmarks/results/2026-12-07/mesh_routes_regions.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data"
CLIPS = ("bbaf2n.mpg", "lbax4n.mpg", "pwij3p.mpg")


def _crop(rgb: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    s = 256 / (2.0 * max(x1 - x0, y1 - y0))
    m = np.float32([[s, 0, 128 - s * (x0 + x1) / 2], [0, s, 128 - s * (y0 + y1) / 2]])
    return cv2.warpAffine(rgb, m, (256, 256))


def _clip_crops(name: str, detect, limit: int | None = None) -> list[np.ndarray]:
    import av

    with av.open(str(SHARED / "video" / "grid" / name)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = frames[:limit] if limit else frames
    box = detect(frames[0])[0].box
    return [_crop(rgb, box) for rgb in frames]


def _regions() -> dict[str, np.ndarray]:
    from dicom_deid.faces import onnx_models as om

    lips = np.array(om.LIPS)
    contour = np.array(om.EYE_A[:om.CONTOUR] + om.EYE_B[:om.CONTOUR])
    eye_rest = np.array(om.EYE_A[om.CONTOUR:] + om.EYE_B[om.CONTOUR:])
    irises = np.arange(468, 478)
    taken = set(lips) | set(contour) | set(eye_rest) | set(irises)
    other = np.array([i for i in range(478) if i not in taken])
    return {"all": np.arange(478), "lips": lips, "eye_contours": contour,
            "eye_rest": eye_rest, "irises": irises, "other": other}


def _nme(got: np.ndarray, ref: np.ndarray, index: np.ndarray) -> float:
    iod = float(np.linalg.norm(ref[33, :2] - ref[263, :2]))
    return float(np.linalg.norm(got[index, :2] - ref[index, :2], axis=1).mean() / iod * 100.0)


def regions(args: argparse.Namespace) -> dict:
    from dicom_deid.faces.models import MediaPipeFaceModels
    from dicom_deid.faces.onnx_models import OnnxFaceModels

    mp_models, onnx_models = MediaPipeFaceModels(), OnnxFaceModels(device="cpu")
    table = _regions()
    photos = sorted(glob.glob(str(SHARED / "faces" / "london" / "*" / "*.jpg")))[::args.step]
    crops = []
    for path in photos:
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        crops.append(_crop(rgb, mp_models.detect(rgb)[0].box))
    clip = _clip_crops(args.clip, mp_models.detect)
    out: dict = {"photos": len(photos), "clip": args.clip, "clip_frames": len(clip),
                 "region_sizes": {k: len(v) for k, v in table.items()}}
    for route in args.routes:
        for source, sequences in (("photos", [[c] * 3 for c in crops]), ("clip", [clip])):
            values: dict[str, list[float]] = {k: [] for k in table}
            for frames in sequences:
                ref_s, ours = mp_models.mesh_session(), onnx_models.mesh_session(route)
                for crop in frames:
                    ref, got = ref_s.landmarks(crop), ours.landmarks(crop)
                    if ref is None or got is None:
                        continue
                    for k, index in table.items():
                        values[k].append(_nme(got, ref, index))
                ref_s.close()
            out.setdefault(route, {})[source] = {
                k: {"n": len(v), "mean_pct": round(float(np.mean(v)), 4),
                    "max_pct": round(float(np.max(v)), 4)} for k, v in values.items() if v}
            print(route, source, {k: v["mean_pct"] for k, v in out[route][source].items()},
                  flush=True)
    return out


def _baseline(path: Path, threads: int):
    """OnnxFaceModels whose attention mesh is another file (e.g. an earlier commit's), the
    rest as this tree's: the two files side by side in one process."""
    from dicom_deid.faces.onnx_models import ATTENTION_LANDMARK, OnnxFaceModels
    from dicom_deid.onnx_device import BundledModel, make_session

    models = OnnxFaceModels(device="cpu", threads=threads)
    bundled = BundledModel.__new__(BundledModel)
    bundled.session = make_session(path, "cpu", threads=threads)
    bundled.input = bundled.session.get_inputs()[0].name
    bundled.shapes = [tuple(o.shape) for o in bundled.session.get_outputs()]
    models._shared._models[ATTENTION_LANDMARK] = bundled
    return models


def speed(args: argparse.Namespace) -> dict:
    from dicom_deid.faces.models import MediaPipeFaceModels
    from dicom_deid.faces.onnx_models import OnnxFaceModels

    mp_models = MediaPipeFaceModels()
    onnx_models = OnnxFaceModels(device="cpu", threads=args.threads)
    clips = [_clip_crops(name, mp_models.detect, args.frames) for name in CLIPS]
    makers = {"mediapipe": mp_models.mesh_session,
              **{r: (lambda r=r: onnx_models.mesh_session(r)) for r in args.routes}}
    if args.baseline_model:
        makers["attention_baseline"] = _baseline(args.baseline_model, args.threads).mesh_session
    sessions = {name: make() for name, make in makers.items()}

    def call(name: str, crop: np.ndarray) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        sessions[name].landmarks(crop)
        return (time.process_time() - cpu) * 1000.0, (time.perf_counter() - wall) * 1000.0

    order = list(sessions)
    for name in order:              # warm-up
        for crop in clips[0][:5]:
            call(name, crop)
    cpu: dict[str, list[float]] = {n: [] for n in sessions}
    wall: dict[str, list[float]] = {n: [] for n in sessions}
    for r in range(args.rounds):
        frames = clips[r % len(clips)]
        sums = {n: [0.0, 0.0] for n in order}
        # Interleaved frame by frame (each session follows the clip in its own tracking
        # state), the order rotated every frame: the load of the shared machine changes
        # within a second, so blocks of frames see different loads
        if args.interleave == "frame":
            for i, crop in enumerate(frames):
                for name in order[i % len(order):] + order[:i % len(order)]:
                    c, w = call(name, crop)
                    sums[name][0] += c
                    sums[name][1] += w
        else:   # each route over the whole clip in turn: its weights stay in the caches
            for name in order[r % len(order):] + order[:r % len(order)]:
                for crop in frames:
                    c, w = call(name, crop)
                    sums[name][0] += c
                    sums[name][1] += w
        for name in order:
            cpu[name].append(sums[name][0] / len(frames))
            wall[name].append(sums[name][1] / len(frames))
        print(f"round {r}: " + "  ".join(f"{n} {cpu[n][-1]:.2f}" for n in order), flush=True)
    rows = {}
    for name in order:
        ratios = [m / c for m, c in zip(cpu["mediapipe"], cpu[name], strict=True)]
        wall_ratios = [m / c for m, c in zip(wall["mediapipe"], wall[name], strict=True)]
        rows[name] = {"cpu_ms_per_frame": round(statistics.median(cpu[name]), 3),
                      "wall_ms_per_frame": round(statistics.median(wall[name]), 3),
                      "cpu_speedup_vs_mediapipe": round(statistics.median(ratios), 3),
                      "wall_speedup_vs_mediapipe": round(statistics.median(wall_ratios), 3),
                      "cpu_ms_rounds": [round(v, 3) for v in cpu[name]]}
        print(f"{name:10s} cpu {rows[name]['cpu_ms_per_frame']:6.2f} ms/frame "
              f"x{rows[name]['cpu_speedup_vs_mediapipe']:.3f}   wall "
              f"{rows[name]['wall_ms_per_frame']:6.2f} x{rows[name]['wall_speedup_vs_mediapipe']:.3f}",
              flush=True)
    return {"rounds": args.rounds, "frames_per_round": args.frames,
            "interleave": args.interleave, "clips": list(CLIPS),
            "onnx_threads": args.threads,
            "baseline_model": str(args.baseline_model) if args.baseline_model else None,
            "per_route": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("speed", "regions"))
    parser.add_argument("--routes", nargs="+", default=None,
                        help="ONNX routes (speed default: attention iris none; regions: "
                        "attention iris)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40, help="frames per clip and block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--interleave", choices=("frame", "block"), default="frame",
                        help="alternate the routes every frame (default; each call finds the "
                        "caches as the other routes left them, as in the product, where "
                        "decoding, rendering and the leak check run between two mesh calls) "
                        "or every clip")
    parser.add_argument("--baseline-model", type=Path, default=None,
                        help="speed: also route attention_baseline, the attention mesh from "
                        "this file (e.g. /work/wt/base30/models/mp_face_landmark_attention.onnx)")
    parser.add_argument("--step", type=int, default=4, help="every step-th London photo")
    parser.add_argument("--clip", default="bbaf2n.mpg")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.routes is None:
        args.routes = ["attention", "iris"] + (["none"] if args.what == "speed" else [])
    load = os.getloadavg()
    result = speed(args) if args.what == "speed" else regions(args)
    import mediapipe as mp
    import onnxruntime as ort

    report = {"command": " ".join(sys.argv), "loadavg_before": [round(v, 2) for v in load],
              "loadavg_after": [round(v, 2) for v in os.getloadavg()],
              "onnxruntime": ort.__version__, "mediapipe": mp.__version__,
              "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              **result}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
