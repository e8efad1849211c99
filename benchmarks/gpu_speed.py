#!/usr/bin/env python
"""Faces + keypoints + encode of a 1080p clip: fps per stage and the multiple of real time.

The clip is made here, never stored: a ../shared/data video scaled to 1080 rows (aspect
kept, padded to 1920 columns) and looped to --seconds, encoded once to a temporary H.264 file
(libx264 ultrafast; not timed). Then one pass, frame after frame, each stage timed apart:

- decode: PyAV, h264_cuvid (NVDEC) when --device is cuda and this FFmpeg has it, else the
  software H.264 decoder;
- faces: the face tracker's models (whole-frame detector on its schedule, mesh on a crop per
  face per frame; rendering the replacement is not included), on --engine and --device;
- keypoints: pose and hands of the keypoint SR (on the keypoint engine: ONNX Runtime on
  --device by default), the face mesh taken from the face stage as the product does;
- encode: h264_nvenc when --device is cuda and this FFmpeg has it, else libx264 with the
  product's settings (crf 18, preset medium), in this thread (the product overlaps it in a
  background thread; timed apart here).

End to end = frames / (sum of the stages' time); real time = clip seconds / that time.
Model stages = faces + keypoints.

    .venv/bin/python benchmarks/gpu_speed.py --device cpu --seconds 5 \\
        --output benchmarks/results/gpu_speed_cpu.json
    .venv/bin/python benchmarks/gpu_speed.py --device cuda          # on a GPU machine

Source clip: GRID audio-visual speech corpus (Cooke, Barker, Cunningham & Shao 2006,
CC BY 4.0); only timings are written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WIDTH, HEIGHT = 1920, 1080


def _default_source() -> Path:
    shared = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared"))
    return shared / "data" / "video" / "grid" / "bbaf2n.mpg"


def _to_1080p(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = HEIGHT / h
    new_w = min(WIDTH, int(round(w * scale / 2) * 2))
    scaled = cv2.resize(rgb, (new_w, HEIGHT), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    x0 = (WIDTH - new_w) // 2
    out[:, x0:x0 + new_w] = scaled
    return out


def make_clip(source: Path, seconds: float, path: Path) -> tuple[int, Fraction]:
    """Write the looped 1080p clip to `path`; (frames, fps)."""
    import av

    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        fps = Fraction(stream.average_rate or 25)
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(stream)]
    if not frames:
        sys.exit(f"{source}: no frames")
    total = int(round(seconds * fps))
    with av.open(str(path), mode="w") as out:
        enc = out.add_stream("libx264", rate=fps)
        enc.width, enc.height, enc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        enc.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(total):
            # Forward then backward: a loop without a jump (no scene cut at each restart).
            period = 2 * len(frames) - 2
            k = i % period
            k = k if k < len(frames) else period - k
            frame = av.VideoFrame.from_ndarray(_to_1080p(frames[k]), format="rgb24")
            for packet in enc.encode(frame):
                out.mux(packet)
        for packet in enc.encode():
            out.mux(packet)
    return total, fps


def _codec(names: tuple[str, ...]) -> str:
    import av

    available = av.codecs_available
    for name in names:
        if name in available:
            return name
    return names[-1]


def run(args: argparse.Namespace) -> dict:
    import av

    from dicom_deid.faces.tracker import FaceTracker
    from dicom_deid.keypoints import KeypointExtractor
    from dicom_deid.onnx_device import ModelSettings, providers_for, uses_gpu

    runtime = ModelSettings(args.device, args.engine)
    gpu = uses_gpu(providers_for(runtime.device))
    decoder = _codec(("h264_cuvid", "h264")) if gpu else "h264"
    encoder = _codec(("h264_nvenc", "libx264")) if gpu else "libx264"
    stages = {"decode": 0.0, "faces": 0.0, "keypoints": 0.0, "encode": 0.0}
    with tempfile.TemporaryDirectory(prefix="gpu-speed-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        start = time.perf_counter()
        total, fps = make_clip(args.source, args.seconds, clip)
        made_s = time.perf_counter() - start
        tracker = FaceTracker(runtime.face_models(), fps=float(fps))
        extractor = KeypointExtractor(face=True, fps=float(fps), runtime=runtime)
        faces_found = frames = 0
        with av.open(str(clip)) as src, av.open(str(Path(tmp) / "out.mp4"), mode="w") as out:
            stream = src.streams.video[0]
            if decoder != "h264":
                stream.codec_context = av.CodecContext.create(decoder, "r")  # type: ignore[misc]
            stream.thread_type = "AUTO"
            enc = out.add_stream(encoder, rate=fps)
            enc.width, enc.height, enc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            if encoder == "libx264":
                enc.options = {"crf": "18", "preset": "medium"}
            packets = src.demux(stream)
            t = time.perf_counter()
            for packet in packets:
                for frame in packet.decode():
                    rgb = frame.to_ndarray(format="rgb24")
                    now = time.perf_counter()
                    stages["decode"] += now - t
                    t = now
                    faces = tracker.update(rgb)
                    now = time.perf_counter()
                    stages["faces"] += now - t
                    t = now
                    marks = [f.landmarks for f in faces if f.landmarks is not None]
                    faces_found += bool(marks)
                    extractor.extract(rgb, marks)
                    now = time.perf_counter()
                    stages["keypoints"] += now - t
                    t = now
                    vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    for p in enc.encode(vf):
                        out.mux(p)
                    now = time.perf_counter()
                    stages["encode"] += now - t
                    frames += 1
                    t = time.perf_counter()
            t = time.perf_counter()
            for p in enc.encode():
                out.mux(p)
            stages["encode"] += time.perf_counter() - t
        tracker.close()
        extractor.close()
    seconds = frames / float(fps)
    wall = sum(stages.values())
    models = stages["faces"] + stages["keypoints"]
    import onnxruntime as ort

    return {
        "command": " ".join(sys.argv),
        "device": runtime.device, "engine": runtime.face_engine,
        "providers": [p if isinstance(p, str) else p[0] for p in providers_for(runtime.device)],
        "decoder": decoder, "encoder": encoder,
        "clip": {"frames": frames, "fps": float(fps), "seconds": round(seconds, 2),
                 "size": f"{WIDTH}x{HEIGHT}", "source": args.source.name,
                 "made_in_s": round(made_s, 1)},
        "frames_with_a_face": faces_found,
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "stage_fps": {k: round(frames / v, 1) if v else None for k, v in stages.items()},
        "end_to_end_fps": round(frames / wall, 2),
        "end_to_end_x_real_time": round(seconds / wall, 3),
        "model_stages_x_real_time": round(seconds / models, 3),
        "onnxruntime": ort.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N]")
    parser.add_argument("--engine", default="onnx", choices=("onnx", "mediapipe"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--source", type=Path, default=_default_source())
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if not args.source.is_file():
        sys.exit(f"{args.source}: not found (../shared/data beside the repository?)")
    report = run(args)
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
