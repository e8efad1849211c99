#!/usr/bin/env python
"""CPU per frame of every thread of the process, on the mp4 and the DICOM video paths, for a
plain transcode and a face method: how the threads are spent.

`video_path_cpu.py` splits the CPU by part of the code (decode, colour conversion, track,
render, leak check); this splits it by OS thread, which also shows the threads that no
Python code runs in: x264's frame and lookahead threads, FFmpeg's decoder threads,
MediaPipe's graph threads and OpenCV's worker pool. The passes are faces_speed's
(`timed_pass` / `run_replacer` for mp4, `timed_dicom_pass` for DICOM), transcode and method
alternating for --rounds rounds. A sampler thread reads /proc/self/task/*/stat every 50 ms, so
a thread that lives less than that may be missed (none of the pipeline's do); the CPU a thread
had before the pass started is subtracted.

Threads are grouped by role: a Python thread by its name (MainThread: the caller's loop, where
the leak check runs; faces-track: tracking and rendering; FrameReader / read_video: decoding;
MpegEncoder / VideoWriter: the encoder's colour conversion and its calls into the codec);
MediaPipe's threads by their own names; FFmpeg's decoder threads by theirs (av:...); every
other native thread by whether it was started during the pass (`native, started in pass`:
the encoder's x264 threads) or before it (`native, older`: pools that outlive a pass, such as
OpenCV's). `total` is the process CPU over the pass's own clock (time.process_time, as
faces_speed counts it). Two things are in the roles but not in `total`: MainThread also holds
the method's FaceReplacer construction, which faces_speed runs before its clock starts (a few
ms per frame of a 100-frame clip), and `sampler` is this script's own cost.

    .venv/bin/python benchmarks/thread_cpu.py --frames 100 --rounds 2
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import faces_speed as fs  # noqa: E402

TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.05


def thread_cpu() -> dict[int, tuple[str, float]]:
    """(comm, CPU ms) of each live thread of this process, by thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                stat = handle.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) * TICK_MS)
    return out


def per_thread(run: Callable[[], dict]) -> tuple[dict, dict[str, float]]:
    """Run one pass; its row and the CPU ms of each role (see the module doc)."""
    before = thread_cpu()
    seen: dict[int, tuple[str, float]] = {}
    names: dict[int, str] = {}
    stop = threading.Event()

    def sample() -> None:
        while True:
            for t in threading.enumerate():
                if t.native_id is not None:
                    names[t.native_id] = t.name
            seen.update(thread_cpu())
            if stop.wait(SAMPLE_S):
                return

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    try:
        row = run()
    finally:
        stop.set()
        sampler.join()
    seen.update(thread_cpu())
    roles: dict[str, float] = collections.defaultdict(float)
    for tid, (comm, ms) in seen.items():
        used = ms - before.get(tid, (comm, 0.0))[1]
        if tid in names:
            role = names[tid]
            if role.startswith(("mediapipe", "sampler")):
                role = role.split("/")[0]
        elif comm.startswith("mediapipe"):
            role = "mediapipe"
        elif comm.startswith("av:"):
            role = "ffmpeg decoder"
        else:
            role = "native, older" if tid in before else "native, started in pass"
        roles[role] += used
    return row, roles


def one_pass(path: str, method: str | None, tmp: Path) -> dict[str, float]:
    if path == "dicom":

        def run() -> dict:
            return fs.timed_dicom_pass(tmp / "input.dcm", tmp / "out.dcm", method)
    elif method is None:

        def run() -> dict:
            return fs.timed_pass(tmp / "input.mp4", tmp / "out.mp4")
    else:

        def run() -> dict:
            return fs.run_replacer(tmp / "input.mp4", tmp / "out.mp4", method)

    row, roles = per_thread(run)
    frames = row["frames"]
    parts = {k: round(v / frames, 2) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])}
    parts["total"] = row["cpu_ms_per_frame"]
    parts["wall_ms"] = round(1000 * row["seconds"] / frames, 2)
    parts["cores_busy"] = round(parts["total"] / parts["wall_ms"], 2)
    parts["load"] = round(os.getloadavg()[0], 2)
    return parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--method", default="swap")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)

    runs: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="thread_cpu_") as tmp_dir:
        tmp = Path(tmp_dir)
        fs.make_clip(tmp / "input.mp4", args.frames)
        fs.make_dicom(tmp / "input.mp4", tmp / "input.dcm")
        one_pass("mp4", None, tmp)  # warm the caches, the codecs and the imports
        for _ in range(args.rounds):
            for path in ("mp4", "dicom"):
                for method in (None, args.method):
                    name = f"{path}-{method or 'transcode'}"
                    runs[name].append(one_pass(path, method, tmp))
                    print(name, json.dumps(runs[name][-1]), flush=True)

    rows = {}
    for name, rs in runs.items():
        keys = sorted(
            {k for r in rs for k in r}, key=lambda k: -float(np.median([r.get(k, 0.0) for r in rs]))
        )
        rows[name] = {k: round(float(np.median([r.get(k, 0.0) for r in rs])), 2) for k in keys}
    summary = {
        "frames": args.frames,
        "rounds": args.rounds,
        "method": args.method,
        "cpu_ms_per_frame_median": rows,
        "runs": runs,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=1) + "\n")
        print("wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
