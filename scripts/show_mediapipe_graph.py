#!/usr/bin/env python
"""Print the graphs MediaPipe's wheel compiled in: its subgraphs' calculators and options.

The legacy solutions' .binarypb files (e.g. hand_landmark_tracking_cpu.binarypb) name
subgraphs (PalmDetectionCpu, HandLandmarkCpu, ...) whose definitions live only inside the
wheel's _framework_bindings library, as serialized CalculatorGraphConfig protos. Their values
can differ from the .pbtxt files on GitHub, and the ONNX runners (keypoints/onnx_pose.py,
keypoints/onnx_hands.py) follow the wheel, so this finds each named subgraph's proto in the
library (its `type` field, then the longest byte run before it that parses as a graph) and
prints it. Runs in the product's environment (it needs mediapipe):

    .venv/bin/python scripts/show_mediapipe_graph.py PalmDetectionCpu HandLandmarkCpu \\
        PalmDetectionDetectionToRoi HandLandmarkLandmarksToRoi
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import sys
from pathlib import Path

# How far before a subgraph's `type` field its proto may start (the largest graphs of the
# wheel are a few kB).
SEARCH_BYTES = 30000


def _library() -> bytes:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mediapipe is not importable here")
    root = Path(list(spec.submodule_search_locations)[0])
    found = glob.glob(str(root / "python" / "_framework_bindings*.so"))
    if not found:
        sys.exit(f"no _framework_bindings library under {root}")
    return Path(found[0]).read_bytes()


def subgraphs(data: bytes, name: str) -> list:
    """Every CalculatorGraphConfig of type `name` stored in the library's bytes."""
    import mediapipe.calculators  # noqa: F401 - registers the calculators' option extensions
    from mediapipe.framework import calculator_pb2

    # Field 20 (type), wire type 2: tag bytes a2 01, then the length and the name.
    key = b"\xa2\x01" + bytes([len(name)]) + name.encode()
    out = []
    pos = data.find(key)
    while pos >= 0:
        end, best = pos + len(key), None
        for start in range(end - 3, max(0, end - SEARCH_BYTES), -1):
            if data[start] != 0x0A:               # field 1 (node), wire type 2
                continue
            config = calculator_pb2.CalculatorGraphConfig()
            try:
                config.ParseFromString(data[start:end])
            except Exception:  # noqa: BLE001 - most byte runs are not a graph
                continue
            if config.type == name and config.node and all(n.calculator for n in config.node):
                best = config
        if best is not None:
            out.append(best)
        pos = data.find(key, pos + 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="+", help="subgraph types, e.g. HandLandmarkCpu")
    args = parser.parse_args()
    data = _library()
    missing = 0
    for name in args.names:
        found = subgraphs(data, name)
        if not found:
            print(f"# {name}: not found in the library")
            missing += 1
        for config in found:
            print(f"# {name}\n{config}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
