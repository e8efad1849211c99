#!/usr/bin/env python
"""Decode + encode speed of the video stage at 720p and 1080p, and peak memory of a long video.

Speed: for each size an H.264 DICOM video of --frames frames is generated (moving, textured
content: skimage's public-domain astronaut panned over a gradient), then timed:

- decode:    open_frames() -> RGB frames (what the face pipeline reads);
- transcode: open_frames() -> write_frames(transfer_syntax="same") (decode + RGB + encode + write);
- reference: PyAV alone decoding the same stream to RGB with swscale's defaults, in the same
  run, so the numbers can be read as ratios on any machine.

Memory: a 1080p H.264 instance of --seconds seconds at 25 fps (default 60 s = 1500 frames, the
issue's case) is generated in one child process and transcoded ("same") in another; each child
reports its peak resident set (VmHWM from /proc, else getrusage ru_maxrss). The target is < 1.5 GB for the transcode.
A short run (--memory-short, default 4 s) is measured the same way, so that the report shows
whether peak memory grows with the length of the video.

    .venv/bin/python benchmarks/transcode.py                      # full: a few to ~15 minutes
    .venv/bin/python benchmarks/transcode.py --frames 40 --seconds 20

Results: a table on stdout and JSON in benchmarks/results/transcode_<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 25


# -- input ---------------------------------------------------------------------------------
def synthetic_frames(count: int, width: int, height: int):
    """Moving textured frames, generated one at a time (bounded memory)."""
    import cv2
    from skimage import data

    base = cv2.resize(data.astronaut(), (width + 256, height + 144), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    for i in range(count):
        x, y = (3 * i) % 256, (2 * i) % 144
        frame = base[y : y + height, x : x + width].astype(np.float32) * 0.8 + np.roll(ramp, 7 * i, axis=1)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def header(width: int, height: int, frames: int):
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4.1"  # Video Photographic Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "BENCHMARK^SYNTHETIC"
    ds.PatientID = "BENCH-0001"
    ds.Modality = "XC"
    ds.Rows, ds.Columns, ds.NumberOfFrames = height, width, frames
    ds.FrameTime = f"{1000 / FPS:.3f}"
    ds.FrameIncrementPointer = 0x00181063
    ds.CineRate = FPS
    return ds


def make_input(path: Path, width: int, height: int, frames: int) -> float:
    """Write an H.264 DICOM video with the video stage itself; returns encode seconds."""
    from pydicom.uid import ExplicitVRLittleEndian

    from dicom_deid.video import VideoInfo, write_frames

    info = VideoInfo(frames=frames, fps=FPS, frame_time_ms=1000 / FPS, rows=height, columns=width,
                     transfer_syntax=ExplicitVRLittleEndian, photometric="RGB", name=path.name)
    start = time.perf_counter()
    write_frames(header(width, height, frames), synthetic_frames(frames, width, height), path, info,
                 transfer_syntax="h264")
    return time.perf_counter() - start


# -- speed ---------------------------------------------------------------------------------
def time_decode(path: Path) -> tuple[int, float]:
    from dicom_deid.video import open_frames

    start = time.perf_counter()
    n = 0
    with open_frames(path) as reader:
        for _ in reader:
            n += 1
    return n, time.perf_counter() - start


def time_transcode(path: Path, out: Path) -> tuple[int, float]:
    from pydicom import dcmread

    from dicom_deid.video import open_frames, write_frames

    start = time.perf_counter()
    template = dcmread(path, stop_before_pixels=True)
    with open_frames(path) as reader:
        report = write_frames(template, reader, out, reader.info, transfer_syntax="same")
    return report.frames, time.perf_counter() - start


def time_reference(path: Path) -> tuple[int, float]:
    """Plain PyAV: demux the stream bytes and convert each frame with swscale's defaults."""
    import io

    import av
    from pydicom import dcmread

    stream = _strip_bot(dcmread(path).PixelData)
    start = time.perf_counter()
    n = 0
    with av.open(io.BytesIO(stream)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        for frame in container.decode(video):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n, time.perf_counter() - start


def _strip_bot(value: bytes) -> bytes:
    """The concatenated fragments of an encapsulated value (items after the offset table)."""
    import struct

    pos, items = 0, []
    while pos + 8 <= len(value):
        group, elem, length = struct.unpack("<HHL", value[pos : pos + 8])
        if (group, elem) != (0xFFFE, 0xE000):
            break
        items.append(value[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return b"".join(items[1:])


# -- memory (child processes) ----------------------------------------------------------------
def _maxrss_mb() -> float:
    """Peak resident set of this process in MB.

    VmHWM is per address space, so it starts afresh at exec; ru_maxrss does not (Linux keeps
    the larger of the parent's peak at fork and the child's), which would report the parent.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def child(argv: list[str]) -> None:
    mode, path = argv[0], Path(argv[1])
    if mode == "make":
        frames = int(argv[2])
        seconds = make_input(path, 1920, 1080, frames)
        result = {"seconds": seconds, "frames": frames}
    else:
        frames, seconds = time_transcode(path, Path(argv[2]))
        result = {"seconds": seconds, "frames": frames}
    result["maxrss_mb"] = _maxrss_mb()
    print(json.dumps(result))


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(work: Path, seconds: float) -> dict:
    frames = round(seconds * FPS)
    src, out = work / f"long_{frames}.dcm", work / f"long_{frames}_out.dcm"
    made = run_child("make", str(src), str(frames))
    done = run_child("transcode", str(src), str(out))
    result = {
        "seconds_of_video": seconds, "frames": frames, "input_bytes": src.stat().st_size,
        "generate_maxrss_mb": round(made["maxrss_mb"], 1), "generate_s": round(made["seconds"], 1),
        "transcode_maxrss_mb": round(done["maxrss_mb"], 1), "transcode_s": round(done["seconds"], 1),
        "transcode_fps": round(done["frames"] / done["seconds"], 2),
    }
    src.unlink()
    out.unlink()
    return result


# -- main -------------------------------------------------------------------------------------
def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per speed test (default 100)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="length of the 1080p memory test video in seconds at 25 fps (default 60)")
    parser.add_argument("--memory-short", type=float, default=4.0,
                        help="length of the short memory comparison run in seconds (default 4)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import av

    results: dict = {
        "machine": {"cpus": os.cpu_count(), "pyav": av.__version__, "ffmpeg": av.ffmpeg_version_info},
        "settings": {"frames": args.frames, "fps": FPS, "codec": "H.264 (libx264) -> same syntax"},
        "speed": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-transcode-") as tmp:
        work = Path(tmp)
        for label, (w, h) in ({} if args.skip_speed else SIZES).items():
            src = work / f"{label}.dcm"
            gen_s = make_input(src, w, h, args.frames)
            n_dec, dec_s = time_decode(src)
            n_tc, tc_s = time_transcode(src, work / f"{label}_out.dcm")
            n_ref, ref_s = time_reference(src)
            assert n_dec == n_tc == n_ref == args.frames, (n_dec, n_tc, n_ref)
            row = {
                "encode_from_rgb_fps": round(args.frames / gen_s, 2),
                "decode_fps": round(n_dec / dec_s, 2),
                "transcode_fps": round(n_tc / tc_s, 2),
                "reference_pyav_decode_fps": round(n_ref / ref_s, 2),
            }
            row["decode_vs_reference"] = round(row["decode_fps"] / row["reference_pyav_decode_fps"], 3)
            results["speed"][label] = row
            print(f"{label}: done", file=sys.stderr, flush=True)
        if not args.skip_memory:
            results["memory"] = {
                "short": measure_memory(work, args.memory_short),
                "long": measure_memory(work, args.seconds),
                "target_mb": 1536,
            }

    print(f"\nvideo stage speed ({args.frames} frames, H.264 {FPS} fps, {os.cpu_count()} CPUs)")
    print(f"{'size':6} {'decode fps':>11} {'transcode fps':>14} {'encode fps':>11} {'PyAV ref fps':>13} {'decode/ref':>11}")
    for label, row in results["speed"].items():
        print(f"{label:6} {row['decode_fps']:11.1f} {row['transcode_fps']:14.1f} {row['encode_from_rgb_fps']:11.1f} "
              f"{row['reference_pyav_decode_fps']:13.1f} {row['decode_vs_reference']:11.2f}")
    if "memory" in results:
        print("\npeak memory, 1080p H.264 -> same (child processes, VmHWM)")
        for key in ("short", "long"):
            m = results["memory"][key]
            print(f"{m['seconds_of_video']:6.0f} s = {m['frames']:5d} frames: transcode {m['transcode_maxrss_mb']:7.1f} MB "
                  f"({m['transcode_fps']:.1f} fps), generate {m['generate_maxrss_mb']:7.1f} MB; target < 1536 MB")
    out = args.json or REPO / "benchmarks" / "results" / f"transcode_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
