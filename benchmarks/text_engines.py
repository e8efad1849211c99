#!/usr/bin/env python
"""Which engine finds burned-in text: PP-OCRv4 detection on ONNX Runtime (dicom_deid.text) or
Tesseract (Debian tesseract-ocr, sparse-text page segmentation, word boxes of any confidence),
on the stills (and the first frame of each clip) of scripts/make_text_testset.py's set.

A planted token counts as found when >= 90 % of its ink box lies inside the engine's boxes
(padded by 2 px, as the redaction pads them). Reported by font size, with wall-clock
milliseconds per frame (one thread for each engine, one frame at a time).

    .venv/bin/python benchmarks/text_engines.py [--stills 16 --clips 4] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from make_text_testset import build_items  # noqa: E402

from dicom_deid.text.ppocr import TextDetector  # noqa: E402
from dicom_deid.text.redact import box_mask, integer_boxes  # noqa: E402


def tesseract_boxes(rgb: np.ndarray, tmp: Path) -> np.ndarray:
    path = tmp / "frame.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    out = subprocess.run(["tesseract", str(path), "-", "--psm", "11", "tsv"], capture_output=True,
                         text=True, timeout=120, env=env).stdout
    boxes = []
    for row in out.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) == 12 and cols[0] == "5" and cols[11].strip():
            x, y, w, h = (int(v) for v in cols[6:10])
            boxes.append((x, y, x + w, y + h))
    return np.array(boxes, np.float32).reshape(-1, 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stills", type=int, default=16)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)
    if shutil.which("tesseract") is None:
        ap.error("tesseract is not installed (Debian: apt-get install tesseract-ocr)")
    items = build_items(args.data, args.seed, args.stills, args.clips, frames=1)
    detector = TextDetector(threads=1)
    found = {e: defaultdict(lambda: [0, 0]) for e in ("ppocr", "tesseract")}
    ms = {"ppocr": [], "tesseract": []}
    with tempfile.TemporaryDirectory(prefix="text_engines_") as tmpdir:
        for item in items:
            _, frame, tokens = next(item.frames_with_truth())
            for engine in ms:
                start = time.perf_counter()
                boxes = detector.detect(frame) if engine == "ppocr" else \
                    tesseract_boxes(frame, Path(tmpdir))
                ms[engine].append(1000 * (time.perf_counter() - start))
                mask = box_mask(frame.shape, integer_boxes(boxes, frame.shape))
                for t in tokens:
                    x0, y0, x1, y1 = t["box"]
                    hit = float(mask[y0:y1, x0:x1].mean()) >= 0.9
                    for key in (t["size_px"], "all"):
                        found[engine][key][0] += hit
                        found[engine][key][1] += 1
    result = {"frames": len(items), "engines": {}}
    for engine, table in found.items():
        sizes = sorted(k for k in table if k != "all")
        result["engines"][engine] = {
            "recall_by_size": {str(k): round(table[k][0] / table[k][1], 3) for k in [*sizes, "all"]},
            "tokens": table["all"][1],
            "ms_per_frame_median": round(float(np.median(ms[engine])), 1),
        }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
