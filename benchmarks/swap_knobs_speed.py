#!/usr/bin/env python
"""Per-frame cost of swap's optional steps, side by side in one process.

Times `SwapRenderer.render` (video mode, one track) on the frames of a clip for each
configuration, alternating configurations round by round (this host's load moves single
timings 2-5x; only the ratios to the first configuration are meant to be read).

    .venv/bin/python benchmarks/swap_knobs_speed.py [--clip ...] [--frames 40] [--rounds 5]
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

# Every knob given, so that the rows do not move with the module's defaults; "main" is main's
# behaviour (every optional step off).
_OFF = {"lip_thickness": None, "donor_own_rim": 0.0, "tone_range": (0.0, 0.0, 0.0)}
CONFIGS = {
    "main": _OFF,
    "lips": {**_OFF, "lip_thickness": (0.8, 1.25)},
    "lips+rim0.5": {**_OFF, "lip_thickness": (0.8, 1.25), "donor_own_rim": 0.5},
    "lips+tone": {**_OFF, "lip_thickness": (0.8, 1.25), "tone_range": (5.0, 3.0, 4.0)},
}


def main() -> int:
    import cv2

    from dicom_deid.faces import mesh
    from dicom_deid.faces.swap import SwapRenderer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(REPO.parent / "shared" / "data" / "video" / "grid"
                                              / "lbax4n.mpg"))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    cap = cv2.VideoCapture(args.clip)
    frames, marks = [], []
    while len(frames) < args.frames:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        lm = mesh.landmarks_from_image(rgb)
        if lm is not None:
            frames.append(rgb)
            marks.append(lm)
    renderers = {name: SwapRenderer(donor_seed=7, shape=1.0, **kw) for name, kw in CONFIGS.items()}
    for r in renderers.values():  # donor settled and caches warm before timing
        r.render(frames[0], marks[0], track_id=0)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, r in renderers.items():
            r.reset()
            start = time.process_time()
            for rgb, lm in zip(frames, marks, strict=True):
                r.render(rgb, lm, track_id=0)
            times[name].append((time.process_time() - start) / len(frames) * 1000.0)
    base = float(np.median(times["main"]))
    result = {"clip": Path(args.clip).name, "frames": len(frames), "rounds": args.rounds,
              "cpu_ms_per_frame_median": {k: round(float(np.median(v)), 2)
                                          for k, v in times.items()},
              "ratio_to_main": {k: round(float(np.median(v)) / base, 3)
                                for k, v in times.items()}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
