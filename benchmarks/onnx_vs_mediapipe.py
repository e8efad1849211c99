#!/usr/bin/env python
"""Per-model speed, side by side: the face models on ONNX Runtime against MediaPipe's TFLite.

Each call is timed whole, pre- and post-processing included (MediaPipe's cannot be taken
apart from its graph), in the same process, alternating the two engines so that both see the
same machine load:

- detector: the full-range face detector on a whole 1920x1080 frame
  (MediaPipe FaceDetection(model_selection=1).process against OnnxFaceModels.detect);
- mesh (plain): FaceMesh(refine_landmarks=False) in tracking mode on a 256x256 face crop
  against OnnxMesh("none"): the same model, face_landmark;
- mesh (refined): FaceMesh(refine_landmarks=True), the product's 478 points (attention mesh)
  against OnnxMesh("attention"), the same model.

Frames: London Set photos (DeBruine & Jones 2017, CC BY 4.0) pasted into 1080p frames, and
their face crops; nothing is written but the timings.

    .venv/bin/python benchmarks/onnx_vs_mediapipe.py --repeats 40 --device cpu \\
        --output benchmarks/results/onnx_vs_mediapipe_cpu.json
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


def _frames(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from dicom_deid.faces.models import MediaPipeFaceModels

    folder = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data" / \
        "faces" / "london" / "neutral"
    paths = sorted(glob.glob(str(folder / "*.jpg")))[:count]
    if not paths:
        sys.exit(f"no photos under {folder}")
    detector = MediaPipeFaceModels()
    frames, crops = [], []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        frame = np.full((1080, 1920, 3), 70, np.uint8)
        h, w = rgb.shape[:2]
        frame[100:100 + h, 700:700 + w] = rgb
        frames.append(frame)
        x0, y0, x1, y1 = detector.detect(rgb)[0].box
        side = 2.0 * max(x1 - x0, y1 - y0)
        s = 256 / side
        m = np.float32([[s, 0, 128 - s * (x0 + x1) / 2], [0, s, 128 - s * (y0 + y1) / 2]])
        crops.append(cv2.warpAffine(rgb, m, (256, 256)))
    detector.close()
    return frames, crops


def _time(fn, items: list[np.ndarray], repeats: int) -> tuple[list[float], float]:
    """Wall ms of each call, and the process's CPU ms per call over them (all threads:
    MediaPipe's graph and XNNPACK threads, onnxruntime's pool), which the other agents on a
    shared machine disturb far less than wall time."""
    out = []
    cpu = time.process_time()
    for i in range(repeats):
        item = items[i % len(items)]
        start = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - start) * 1000.0)
    return out, (time.process_time() - cpu) * 1000.0 / max(repeats, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads per session (default: its own)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import mediapipe as mp

    from dicom_deid.faces.models import MediaPipeFaceModels
    from dicom_deid.faces.onnx_models import OnnxFaceModels

    frames, crops = _frames(8)
    mp_models = MediaPipeFaceModels()
    onnx_models = OnnxFaceModels(device=args.device, threads=args.threads)

    def mesh_mp(refine: bool):
        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                               refine_landmarks=refine)
        # One crop over and over: tracking mode, the region from the previous landmarks.
        return lambda crop: mesh.process(crop)

    def mesh_onnx(refinement: str):
        session = onnx_models.mesh_session(refinement)
        return session.landmarks

    cases = {
        "detector_1080p": (mp_models.detect, onnx_models.detect, frames),
        "mesh_plain_256": (mesh_mp(False), mesh_onnx("none"), crops[:1]),
        "mesh_refined_256": (mesh_mp(True), mesh_onnx("attention"), crops[:1]),
    }
    results = {}
    for name, (mp_fn, onnx_fn, items) in cases.items():
        for fn in (mp_fn, onnx_fn):   # warm-up
            _time(fn, items, 3)
        mp_ms, onnx_ms, mp_cpu, onnx_cpu = [], [], [], []
        for _ in range(4):            # alternate in blocks: both engines see the same load
            wall, cpu = _time(mp_fn, items, args.repeats // 4)
            mp_ms += wall
            mp_cpu.append(cpu)
            wall, cpu = _time(onnx_fn, items, args.repeats // 4)
            onnx_ms += wall
            onnx_cpu.append(cpu)
        row = {"mediapipe_ms": round(statistics.median(mp_ms), 2),
               "onnx_ms": round(statistics.median(onnx_ms), 2),
               "mediapipe_cpu_ms": round(statistics.median(mp_cpu), 2),
               "onnx_cpu_ms": round(statistics.median(onnx_cpu), 2)}
        row["onnx_speedup"] = round(row["mediapipe_ms"] / row["onnx_ms"], 2)
        row["onnx_cpu_speedup"] = round(row["mediapipe_cpu_ms"] / row["onnx_cpu_ms"], 2)
        results[name] = row
        print(f"{name:18s} wall: mediapipe {row['mediapipe_ms']:6.2f} ms onnx "
              f"{row['onnx_ms']:6.2f} ms (x{row['onnx_speedup']:.2f})   cpu: mediapipe "
              f"{row['mediapipe_cpu_ms']:6.2f} ms onnx {row['onnx_cpu_ms']:6.2f} ms "
              f"(x{row['onnx_cpu_speedup']:.2f})", flush=True)
    import onnxruntime as ort

    report = {
        "command": " ".join(sys.argv),
        "device": args.device,
        "onnx_threads": args.threads,
        "repeats": args.repeats,
        "median_ms_per_call": results,   # wall: median call; cpu: median of 4 blocks
        "onnxruntime": ort.__version__,
        "mediapipe": mp.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "note": "shared machine: 2 cores used by several agents at once; absolute times vary "
                "3-5x, the two engines were timed alternately in the same process",
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
