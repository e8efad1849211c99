#!/usr/bin/env python
"""Does the int8 CenterFace find the faces the float one finds? Recall and speed, side by side.

The leak check runs CenterFace on every output frame; models/centerface_int8.onnx (built by
scripts/quantize_centerface.py) is a static int8 quantisation of models/centerface.onnx. A
leak check that misses faces is worse than a slow one, so the int8 model is used only if it
detects what the float model detects, at the leak check's own threshold and input size:

Each model runs at its own threshold (leakcheck.THRESHOLDS: float 0.5, int8 0.45).

- London faces (the identities NOT used for calibration: odd-numbered photos, neutral and
  smiling) pasted into a 1280x720 frame at face widths of 40, 60, 90, 150 and 300 px, at a
  varied position and background; a face counts as found when a detection at the threshold
  has its centre inside the pasted face's box. The issue's smallest face is about 60 px.
- every frame of the GRID clips and of the film excerpt, at their own size and scaled to 720
  rows (as the 720p benchmark sees them): how many of the float model's detections the int8
  model also has (IoU >= 0.5), and the detections it adds.

CPU milliseconds per 720p detection (one thread, as the leak check runs it) for both models.

    .venv/bin/python benchmarks/centerface_int8.py
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.faces.centerface import CenterFace, Detection  # noqa: E402
from dicom_deid.faces.leakcheck import DEFAULT_MAX_SIDE, THRESHOLDS  # noqa: E402
from dicom_deid.faces.media import read_video  # noqa: E402
from dicom_deid.faces.tracker import iou  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
WIDTHS = (40, 60, 90, 150, 300)
FRAME = (1280, 720)


def held_out_photos(root: Path) -> list[Path]:
    """London photos whose identity number is odd: never seen by the calibration."""
    out = []
    for path in sorted(glob.glob(str(root / "faces" / "london" / "*" / "*.jpg"))):
        ident = int(Path(path).stem.split("_")[0])
        if ident % 2 == 1:
            out.append(Path(path))
    return out


@dataclass(frozen=True)
class Detector:
    """One model at its own threshold, run as the leak check runs it."""

    model: CenterFace
    threshold: float

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.model.detect(rgb, threshold=self.threshold, max_side=DEFAULT_MAX_SIDE)


def pasted_recall(models: dict[str, Detector], photos: list[Path]) -> dict:
    rng = np.random.default_rng(7)
    reference = models["float"].model
    found = {name: {w: 0 for w in WIDTHS} for name in models}
    total = {w: 0 for w in WIDTHS}
    for path in photos:
        photo = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        dets = reference.detect(photo, threshold=0.5)
        if not dets:
            continue
        face = max(dets, key=lambda d: d.score)
        for width in WIDTHS:
            scale = width / face.width
            small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            canvas = np.empty((FRAME[1], FRAME[0], 3), np.uint8)
            canvas[:] = rng.integers(30, 220, size=3, dtype=np.uint8)
            h, w = min(small.shape[0], FRAME[1]), min(small.shape[1], FRAME[0])
            y = int(rng.integers(0, FRAME[1] - h + 1))
            x = int(rng.integers(0, FRAME[0] - w + 1))
            canvas[y:y + h, x:x + w] = small[:h, :w]
            fx0, fy0 = x + face.box[0] * scale, y + face.box[1] * scale
            fx1, fy1 = x + face.box[2] * scale, y + face.box[3] * scale
            if fx1 > x + w or fy1 > y + h:
                continue            # the face itself was cut off by the frame
            total[width] += 1
            for name, model in models.items():
                for det in model.detect(canvas):
                    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
                    if fx0 <= cx <= fx1 and fy0 <= cy <= fy1:
                        found[name][width] += 1
                        break
    return {"faces_per_width": total,
            "recall": {name: {w: round(found[name][w] / max(total[w], 1), 4) for w in WIDTHS}
                       for name in models}}


def video_agreement(models: dict[str, Detector], videos: list[Path]) -> dict:
    rows = {}
    for path in videos:
        for label, rows_720 in (("native", False), ("720p", True)):
            ref_count = kept = added = frames = 0
            for rgb in read_video(path):
                if rows_720:
                    w = int(round(rgb.shape[1] * 720 / rgb.shape[0] / 2)) * 2
                    rgb = cv2.resize(rgb, (w, 720), interpolation=cv2.INTER_CUBIC)
                frames += 1
                ref = models["float"].detect(rgb)
                new = models["int8"].detect(rgb)
                pairs = [(i, j) for i, d in enumerate(ref) for j, e in enumerate(new)
                         if iou(d.box, e.box) >= 0.5]
                ref_count += len(ref)
                kept += len({i for i, _ in pairs})
                added += len(new) - len({j for _, j in pairs})
            rows[f"{path.name} {label}"] = {"frames": frames, "float_detections": ref_count,
                                           "int8_kept": kept, "int8_added": added}
    return rows


def speed(models: dict[str, Detector], frames: int = 60) -> dict:
    from skimage import data

    rgb = cv2.resize(data.astronaut(), FRAME)
    out = {}
    for name, model in models.items():
        for _ in range(5):
            model.detect(rgb)
        start = time.process_time()
        for _ in range(frames):
            model.detect(rgb)
        out[name] = round(1000 * (time.process_time() - start) / frames, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--int8", type=Path, default=REPO / "models" / "centerface_int8.onnx")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--threshold", type=float, default=THRESHOLDS["float"],
                    help="the float model's threshold")
    ap.add_argument("--int8-threshold", type=float, default=THRESHOLDS["int8"],
                    help="the int8 model's threshold")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)
    models = {
        "float": Detector(CenterFace(REPO / "models" / "centerface.onnx", threads=1), args.threshold),
        "int8": Detector(CenterFace(args.int8, threads=1), args.int8_threshold),
    }
    videos = sorted((args.data / "video").glob("*/*.mp*"))
    result = {
        "threshold": args.threshold,
        "int8_threshold": args.int8_threshold,
        "max_side": DEFAULT_MAX_SIDE,
        "cpu_ms_per_720p_detection": speed(models),
        "pasted_london_held_out": pasted_recall(models, held_out_photos(args.data)),
        "videos": video_agreement(models, videos),
    }
    print(json.dumps(result, indent=1))
    out = args.output or REPO / "benchmarks" / "results" / time.strftime("%Y-%m-%d") / "centerface_int8.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
