#!/usr/bin/env python
"""Each converted model alone, side by side: ONNX Runtime (models/mp_*.onnx) against the
TFLite interpreter with XNNPACK on the .tflite file it was converted from, one thread each.

MediaPipe runs its models on the same TFLite + XNNPACK runtime inside its graph, but its
Python solutions time a whole graph (crop, model, decoding, tracking), and none runs the iris
model on its own: this times the network alone, including for the iris model, which
`benchmarks/onnx_vs_mediapipe.py` cannot. The attention mesh is not here: the TFLite
interpreter cannot run its MediaPipe custom ops (onnx_vs_mediapipe.py times it within
FaceMesh). The pose landmark model on ONNX lacks the segmentation output (dropped by the
conversion), so TFLite does more work there.

The inputs are random (a network's cost does not depend on the values); the engines alternate
in blocks, and both CPU time (this process, all threads) and wall time are kept.

It needs TensorFlow's TFLite interpreter, which cannot live beside MediaPipe's protobuf: run
it in the conversion environment (see scripts/convert_models.py), e.g.

    /tmp/conv/bin/python benchmarks/onnx_vs_tflite_models.py \\
        --mediapipe-dir .venv/lib/python3.11/site-packages/mediapipe --repeats 200 \\
        --output benchmarks/results/onnx_vs_tflite_models.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from convert_models import BODY_MODELS, FACE_MODELS  # noqa: E402


def _blocks(fn, count: int) -> tuple[list[float], float]:
    wall = []
    cpu = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        fn()
        wall.append((time.perf_counter() - start) * 1000.0)
    return wall, (time.process_time() - cpu) * 1000.0 / max(count, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mediapipe-dir", required=True)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import onnxruntime as ort
    import tensorflow as tf

    modules = Path(args.mediapipe_dir) / "modules"
    rng = np.random.default_rng(0)
    results = {}
    for rel, name in FACE_MODELS + BODY_MODELS:
        if "attention" in rel:
            continue
        interpreter = tf.lite.Interpreter(model_path=str(modules / rel), num_threads=1)
        interpreter.allocate_tensors()
        tfl_in = interpreter.get_input_details()[0]
        image = rng.random(tuple(tfl_in["shape"]), dtype=np.float32)

        def tflite(interpreter=interpreter, index=tfl_in["index"], image=image):
            interpreter.set_tensor(index, image)
            interpreter.invoke()

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(REPO / "models" / name), options,
                                       providers=["CPUExecutionProvider"])
        onnx_in = session.get_inputs()[0]
        tensor = image if list(onnx_in.shape) == list(image.shape) else \
            np.ascontiguousarray(image.transpose(0, 3, 1, 2))

        def onnx(session=session, name=onnx_in.name, tensor=tensor):
            session.run(None, {name: tensor})

        for fn in (tflite, onnx):
            _blocks(fn, 5)
        per_block = max(args.repeats // args.blocks, 1)
        walls: dict[str, list[float]] = {"tflite": [], "onnx": []}
        cpus: dict[str, list[float]] = {"tflite": [], "onnx": []}
        for _ in range(args.blocks):
            for key, fn in (("tflite", tflite), ("onnx", onnx)):
                wall, cpu = _blocks(fn, per_block)
                walls[key] += wall
                cpus[key].append(cpu)
        row = {"tflite_ms": statistics.median(walls["tflite"]),
               "onnx_ms": statistics.median(walls["onnx"]),
               "tflite_cpu_ms": statistics.median(cpus["tflite"]),
               "onnx_cpu_ms": statistics.median(cpus["onnx"])}
        row = {k: round(v, 3) for k, v in row.items()}
        row["onnx_speedup"] = round(row["tflite_ms"] / row["onnx_ms"], 2)
        row["onnx_cpu_speedup"] = round(row["tflite_cpu_ms"] / row["onnx_cpu_ms"], 2)
        results[name] = row
        print(f"{name:34s} wall: tflite {row['tflite_ms']:7.2f} onnx {row['onnx_ms']:7.2f} "
              f"(x{row['onnx_speedup']:.2f})  cpu: tflite {row['tflite_cpu_ms']:7.2f} onnx "
              f"{row['onnx_cpu_ms']:7.2f} (x{row['onnx_cpu_speedup']:.2f})", flush=True)
    report = {
        "command": " ".join(sys.argv),
        "repeats": args.repeats,
        "blocks": args.blocks,
        "median_ms_per_call": results,   # wall: median call; cpu: median of the blocks
        "onnxruntime": ort.__version__,
        "tensorflow": tf.__version__,
        "load_average_1min_at_end": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "note": "one thread each; TFLite with its default XNNPACK delegate (MediaPipe's "
                "runtime, another build); shared 2-core machine, engines alternated in blocks",
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
