#!/usr/bin/env python
"""CPU milliseconds per frame of each part of the face stage, on the 720p speed clip.

`faces_speed.py` says how the whole stage compares with a transcode; this says where its time
goes, so that the next speed change starts from a measurement. The clip (skimage's astronaut
moving across 1280x720, as in faces_speed.py) is decoded first; then `FaceReplacer.process`
runs over every frame in this thread, with each part wrapped to add up its CPU time (all
threads of the process while it runs: MediaPipe's graph threads are counted with the call
that waits for them):

- scenecut, mp_mesh (crop + MediaPipe face mesh, per face), mp_detect (MediaPipe detection,
  every few frames): the tracker's parts; tracker: all of `FaceTracker.update`;
- render: the method's renderer; replace: tracking, rendering and covering (`_replace`);
- leak: the independent leak check (`LeakChecker.find`, CenterFace); total: everything.

No video is encoded or decoded while timing, and nothing runs beside the stage, so the numbers
are lower than the same parts cost inside the end-to-end benchmark, where x264 shares the
cores and the caches (about 1.3x on the 2-core machine).

    .venv/bin/python benchmarks/faces_stages.py [--method swap] [--frames 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from faces_speed import make_clip  # noqa: E402

from dicom_deid.faces import FaceReplacer  # noqa: E402
from dicom_deid.faces.media import read_video  # noqa: E402

WARM_UP = 5


def timed(totals: dict[str, float], key: str, fn: Callable) -> Callable:
    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.process_time() - start
    return wrapper


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="swap")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--output", type=Path, help="JSON result (default: print only)")
    args = ap.parse_args(argv)
    if args.frames <= WARM_UP:
        ap.error(f"--frames must be more than {WARM_UP}")

    with tempfile.TemporaryDirectory(prefix="faces_stages_") as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames)
        frames = list(read_video(clip))

    totals: dict[str, float] = defaultdict(float)
    replacer = FaceReplacer(args.method, donor_seed=1234, fps=25.0)
    tracker = replacer.tracker
    # Instance attributes shadow the methods, so only this replacer is measured.
    tracker.models.detect = timed(totals, "mp_detect", tracker.models.detect)
    tracker._mesh = timed(totals, "mp_mesh", tracker._mesh)
    tracker._cut = timed(totals, "scenecut", tracker._cut)
    tracker.update = timed(totals, "tracker", tracker.update)
    if replacer.renderer is not None:
        replacer.renderer.render = timed(totals, "render", replacer.renderer.render)
    replacer._replace = timed(totals, "replace", replacer._replace)
    if replacer.leak_checker is not None:
        replacer.leak_checker.find = timed(totals, "leak", replacer.leak_checker.find)
    try:
        for rgb in frames[:WARM_UP]:
            replacer.process(rgb)
        totals.clear()
        start = time.process_time()
        for rgb in frames[WARM_UP:]:
            replacer.process(rgb)
        totals["total"] = time.process_time() - start
    finally:
        report = replacer.close()
    timed_frames = len(frames) - WARM_UP
    result = {
        "method": args.method,
        "frames": timed_frames,
        "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "cpu_ms_per_frame": {k: round(1000 * v / timed_frames, 2) for k, v in totals.items()},
        "detections_run": report.detections_run,
        "fallback_frames": report.fallback_frames,
        "leaks": report.leaks,
    }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
