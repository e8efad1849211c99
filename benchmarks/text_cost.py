#!/usr/bin/env python
"""What the burned-in text stage adds to the face stage's CPU per 720p frame, side by side.

The clip is faces_speed.py's (skimage's astronaut moving, turning and zooming across 1280x720)
with a device-like overlay burned in: name, ID and date of birth top left, institution, date
and time top right, a running clock and a frame counter bottom left (DejaVu, 14-24 px). It is
decoded once; then, in alternating rounds, `FaceReplacer.process` runs over every frame, and
`TextStage.stream` (redact-all, static-overlay tracking: full detection on key frames, the edge
check and region checks between them) over the face stage's output frames. CPU time is
`time.process_time` (all threads of the process), per frame; the target is text <= 20 % of faces.

    .venv/bin/python benchmarks/text_cost.py [--frames 100] [--rounds 3] [--key-interval 16]
        [--output benchmarks/results/<date>/text_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

from faces_speed import make_clip  # noqa: E402
from make_text_testset import Block, Line, place, render  # noqa: E402

from dicom_deid.faces import FaceReplacer  # noqa: E402
from dicom_deid.faces.media import read_video  # noqa: E402
from dicom_deid.text import TextStage  # noqa: E402

WARM_UP = 3


def overlay_blocks(width: int, height: int, frames: int) -> list[Block]:
    blocks = [
        Block([Line("name", ["DOE^JANE"], True), Line("id", ["MRN", "48213977"], True),
               Line("dob", ["DOB", "1957-03-02"], True)], "DejaVuSans.ttf", 20, "box-dark", (0.0, 0.0)),
        Block([Line("institution", ["ST", "MARY", "HOSPITAL"], True),
               Line("date", ["2024-11-02"], True), Line("time", ["14:32"], True)],
              "DejaVuSansMono.ttf", 16, "plain-light-shadow", (1.0, 0.0)),
        Block([Line("clock", [str(14 * 3600 + 32 * 60)], True, changing="clock"),
               Line("counter", ["FRM", "0"], False, changing="counter")],
              "DejaVuSansMono-Bold.ttf", 14, "plain-light", (0.0, 1.0)),
    ]
    place(blocks, width, height, 25.0, frames)
    return blocks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--method", default="swap")
    ap.add_argument("--key-interval", type=int, default=16)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="text_cost_") as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames)
        pictures = list(read_video(clip))
    h, w = pictures[0].shape[:2]
    blocks = overlay_blocks(w, h, len(pictures))
    frames = [render(p, blocks, i, 25.0)[0] for i, p in enumerate(pictures)]
    n = len(frames) - WARM_UP
    faces_ms, text_ms, reports = [], [], []
    for _ in range(args.rounds):
        replacer = FaceReplacer(args.method, donor_seed=1234, fps=25.0)
        try:
            outs = [replacer.process(f) for f in frames[:WARM_UP]]
            start = time.process_time()
            outs += [replacer.process(f) for f in frames[WARM_UP:]]
            faces_ms.append(1000 * (time.process_time() - start) / n)
        finally:
            replacer.close()
        stage = TextStage("redact-all", key_interval=args.key_interval, inplace=True)
        list(stage.stream(o.copy() for o in outs[:WARM_UP]))
        stage = TextStage("redact-all", key_interval=args.key_interval, inplace=True)
        timed = outs[WARM_UP:]
        start = time.process_time()
        for _ in stage.stream(iter(timed)):
            pass
        text_ms.append(1000 * (time.process_time() - start) / n)
        reports.append(stage.close().as_dict())
    ratios = [t / f for t, f in zip(text_ms, faces_ms, strict=True)]
    result = {
        "size": f"{w}x{h}", "frames": n, "rounds": args.rounds, "method": args.method,
        "key_interval": args.key_interval,
        "faces_cpu_ms_per_frame": [round(v, 1) for v in faces_ms],
        "text_cpu_ms_per_frame": [round(v, 1) for v in text_ms],
        "text_over_faces": [round(v, 3) for v in ratios],
        "text_over_faces_median": round(statistics.median(ratios), 3),
        "text_report_last_round": reports[-1],
        "target": "text_over_faces <= 0.20",
    }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
