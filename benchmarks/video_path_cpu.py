#!/usr/bin/env python
"""Where the CPU of the mp4 and the DICOM video paths goes, per frame, with and without swap.

`faces_speed.py --dicom` gives the end-to-end ratios (swap against a plain transcode, on each
path); this says why the DICOM ratio is lower. The same 720p clip (faces_speed.make_clip) runs
through the same passes as there (faces_speed.timed_pass / run_replacer for mp4,
timed_dicom_pass for DICOM), transcode and swap alternating for --rounds rounds, while each
part below adds up the CPU time of the thread it runs in (time.thread_time):

- decode: the decoder's demux/decode calls (DICOM: MpegDecoder; mp4: the whole read_video
  generator, decode and colour conversion together);
- to_rgb: DICOM only, the YUV->RGB conversion (swscale, accurate rounding);
- enc_conv: the encoder thread's RGB->YUV conversion and its call into x264 (x264's own
  frame threads are not in it); enc_put: the caller's side of the encoder (copying the frame
  into a VideoFrame);
- track / render / leak: the face stage (FaceTracker.update without MediaPipe's own graph
  threads, the method's renderer, the CenterFace leak check).

`total` is the process CPU (all threads: x264's frame threads and MediaPipe's graph threads
too); `native_rest` = total - the parts (mostly x264 and MediaPipe). `face_work` = swap's total
- the transcode's total on the same path: the CPU the face stage adds per frame. When the host
is saturated the wall-time ratio follows the CPU ratio, transcode / (transcode + face_work), so
`face_work_for_0.6x` = transcode x (1/0.6 - 1) is what the face stage may cost for swap to
reach 0.6x a plain transcode on that path. On the shared 2-core host the totals of one code
swing by up to half between runs at load 20-30; compare the parts and several runs.

    .venv/bin/python benchmarks/video_path_cpu.py --frames 100 --rounds 3
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import faces_speed as fs  # noqa: E402

TOTALS: dict[str, float] = collections.defaultdict(float)


def _timed(fn: Callable, key: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            TOTALS[key] += time.thread_time() - start
    return wrapper


def _timed_generator(fn: Callable, key: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        items = fn(*args, **kwargs)
        while True:
            start = time.thread_time()
            try:
                item = next(items)
            except StopIteration:
                TOTALS[key] += time.thread_time() - start
                return
            TOTALS[key] += time.thread_time() - start
            yield item
    return wrapper


def instrument() -> None:
    """Wrap the parts (module attributes looked up at call time, so the passes use them)."""
    from dicom_deid.faces import leakcheck, media, replacer, tracker
    from dicom_deid.video import decode_mpeg, encode_mpeg, reader

    decode_mpeg.MpegDecoder._decode = _timed_generator(decode_mpeg.MpegDecoder._decode, "decode")
    reader.to_rgb = _timed(reader.to_rgb, "to_rgb")
    encode_mpeg.MpegEncoder.encode = _timed(encode_mpeg.MpegEncoder.encode, "enc_put")
    encode_mpeg.MpegEncoder._encode_frame = _timed(encode_mpeg.MpegEncoder._encode_frame,
                                                   "enc_conv")
    media._decode_video = _timed_generator(media._decode_video, "decode")
    media.VideoWriter.write = _timed(media.VideoWriter.write, "enc_put")
    media.VideoWriter._encode = _timed(media.VideoWriter._encode, "enc_conv")
    tracker.FaceTracker.update = _timed(tracker.FaceTracker.update, "track")
    replacer.FaceReplacer._render = _timed(replacer.FaceReplacer._render, "render")
    leakcheck.LeakChecker.find = _timed(leakcheck.LeakChecker.find, "leak")


def one_pass(path: str, method: str | None, tmp: Path) -> dict[str, float]:
    TOTALS.clear()
    if path == "dicom":
        row = fs.timed_dicom_pass(tmp / "input.dcm", tmp / "out.dcm", method)
    elif method is None:
        row = fs.timed_pass(tmp / "input.mp4", tmp / "out.mp4")
    else:
        row = fs.run_replacer(tmp / "input.mp4", tmp / "out.mp4", method)
    frames = row["frames"]
    parts = {k: round(1000 * v / frames, 2) for k, v in sorted(TOTALS.items())}
    parts["total"] = row["cpu_ms_per_frame"]
    parts["native_rest"] = round(parts["total"] - sum(v for k, v in parts.items() if k != "total"), 2)
    parts["wall_ms"] = round(1000 * row["seconds"] / frames, 2)
    parts["load"] = round(os.getloadavg()[0], 2)
    return parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--method", default="swap")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)

    instrument()
    runs: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="video_path_cpu_") as tmp_dir:
        tmp = Path(tmp_dir)
        fs.make_clip(tmp / "input.mp4", args.frames)
        fs.make_dicom(tmp / "input.mp4", tmp / "input.dcm")
        one_pass("mp4", None, tmp)        # warm the caches, the codecs and the imports
        for _ in range(args.rounds):
            for path in ("mp4", "dicom"):
                for method in (None, args.method):
                    name = f"{path}-{method or 'transcode'}"
                    runs[name].append(one_pass(path, method, tmp))
                    print(name, runs[name][-1], flush=True)

    rows = {name: {k: round(float(np.median([r.get(k, 0.0) for r in rs])), 2)
                   for k in rs[0]} for name, rs in runs.items()}
    summary: dict = {"frames": args.frames, "rounds": args.rounds, "method": args.method,
                     "rows_median_cpu_ms_per_frame": rows, "runs": runs}
    for path in ("mp4", "dicom"):
        t = rows[f"{path}-transcode"]["total"]
        s = rows[f"{path}-{args.method}"]["total"]
        summary[f"{path}_transcode_cpu_ms"] = t
        summary[f"{path}_face_work_cpu_ms"] = round(s - t, 2)
        summary[f"{path}_cpu_ratio"] = round(t / s, 3)
        summary[f"{path}_face_work_for_0.6x"] = round(t * (1 / 0.6 - 1), 2)
    print(f"{'row':<16}" + "".join(f"{k:>12}" for k in rows["dicom-" + args.method]))
    for name, row in rows.items():
        print(f"{name:<16}" + "".join(f"{row.get(k, 0.0):>12.2f}" for k in rows["dicom-" + args.method]))
    for key, value in summary.items():
        if key.startswith(("mp4_", "dicom_")):
            print(f"{key}: {value}")
    out = args.output or (REPO / "benchmarks" / "results" / time.strftime("%Y-%m-%d")
                          / f"video_path_cpu_{time.strftime('%Y%m%dT%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
