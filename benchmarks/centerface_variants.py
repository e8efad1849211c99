#!/usr/bin/env python
"""CPU of one leak check (CenterFace at its input size, one thread) for several builds of the
model, side by side in one process, rounds interleaved.

For trying builds of scripts/quantize_centerface.py (--float-stem, --drop-landmarks) against
the shipped models on the host at hand: the leak check runs on every output frame, so its CPU
is half of the face stage's on the DICOM path (benchmarks/video_path_cpu.py). Each build's
outputs are compared with the shipped int8 model's on the same frame (max |difference| of the
heatmap, box sizes and offsets). The frame is skimage's astronaut at 1280x720, prepared as
the leak check prepares it (`centerface.input_blob`, longer side 416: 416x256).

    .venv/bin/python benchmarks/centerface_variants.py --model nolm=/tmp/nolm.onnx \
        --output benchmarks/results/<date>/centerface_variants.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.faces.centerface import _NHWC_SHAPES, _SHAPES, NHWC_INPUT, input_blob  # noqa: E402
from dicom_deid.faces.leakcheck import DEFAULT_MAX_SIDE  # noqa: E402
from dicom_deid.faces.onnx_shapes import OnnxFormatError, graph_inputs, set_io_shapes  # noqa: E402
from dicom_deid.onnx_device import make_session  # noqa: E402

HEADS = ["537", "538", "539"]       # heatmap, box sizes, offsets (what the leak check reads)
LANDMARKS = "540"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)


def session(path: Path) -> tuple[object, str]:
    data = path.read_bytes()
    nhwc = NHWC_INPUT in graph_inputs(data)
    shapes = dict(_NHWC_SHAPES if nhwc else _SHAPES)
    try:
        set_io_shapes(data, shapes)
    except OnnxFormatError:         # a build without the landmark head (--drop-landmarks)
        shapes.pop(LANDMARKS)
    return make_session(set_io_shapes(data, shapes), "cpu", threads=1), \
        NHWC_INPUT if nhwc else "input.1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="a build to compare (repeatable)")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)
    from skimage import data as samples

    models = {"int8_shipped": REPO / "models" / "centerface_int8.onnx",
              "float_shipped": REPO / "models" / "centerface.onnx"}
    for item in args.model:
        name, _, path = item.partition("=")
        models[name] = Path(path)
    frame = cv2.resize(samples.astronaut(), (1280, 720), interpolation=cv2.INTER_AREA)
    sessions = {name: session(path) for name, path in models.items()}
    feeds = {name: {inp: input_blob(frame, DEFAULT_MAX_SIDE, nhwc=inp == NHWC_INPUT)[0]}
             for name, (_, inp) in sessions.items()}
    ref = sessions["int8_shipped"][0].run(HEADS, feeds["int8_shipped"])  # type: ignore[attr-defined]
    result: dict = {"host": {"cpu_flags": cpu_flags(), "machine": platform.machine(),
                             "cores": os.cpu_count()},
                    "load_start": os.getloadavg()[0], "models": {}}
    for name, (sess, _) in sessions.items():
        out = sess.run(HEADS, feeds[name])  # type: ignore[attr-defined]
        result["models"][name] = {"path": str(models[name]), "max_abs_diff_vs_int8_shipped": [
            float(np.abs(a - b).max()) for a, b in zip(out, ref, strict=True)]}
    totals = dict.fromkeys(sessions, 0.0)
    for _ in range(args.rounds):
        for name, (sess, _) in sessions.items():
            start = time.thread_time()
            for _ in range(3):
                sess.run(HEADS, feeds[name])  # type: ignore[attr-defined]
            totals[name] += time.thread_time() - start
    base = totals["int8_shipped"]
    for name, total in totals.items():
        ms = 1000 * total / (3 * args.rounds)
        result["models"][name].update(cpu_ms=round(ms, 2), speed_vs_int8_shipped=round(base / total, 3))
        print(f"{name:16s} {ms:7.2f} ms  x{base / total:.3f}  "
              f"diff {result['models'][name]['max_abs_diff_vs_int8_shipped']}")
    result["load_end"] = os.getloadavg()[0]
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print("wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
