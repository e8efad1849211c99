#!/usr/bin/env python
"""Per-frame cost of the swap and mask3d renderers at 720p, against a plain transcode.

A 1280x720 frame holds one face about ``--face`` pixels wide (a London photo, scaled). In the
same run the script times, per frame:

- transcode: decode + encode of the frame with libx264 (PyAV, preset veryfast, crf 23), the
  reference the product target is stated against;
- track: MediaPipe face mesh with iris on the frame (video mode), what the tracker pays;
- render: SwapRenderer.render / Mask3DRenderer.render with known landmarks.

and reports ratios: render / transcode, and the implied end-to-end speed
transcode / (transcode + track + render) (target for swap: >= 0.6).

    .venv/bin/python benchmarks/face_renderers_speed.py --frames 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.faces import mesh  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def test_frame(face_px: int) -> np.ndarray:
    """A 720p frame with one face about ``face_px`` wide (skimage's astronaut if no London)."""
    path = SHARED / "faces" / "london" / "neutral" / "001_03.jpg"
    if path.exists():
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    else:
        from skimage import data

        rgb = data.astronaut()
    lm = mesh.landmarks_from_image(rgb)
    width = float(np.ptp(lm[:, 0]))
    scale = face_px / width
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((720, 1280, 3), 90, np.uint8)
    h, w = min(small.shape[0], 720), min(small.shape[1], 1280)
    y0, x0 = (720 - h) // 2, (1280 - w) // 2
    frame[y0:y0 + h, x0:x0 + w] = small[:h, :w]
    return frame


def time_transcode(frame: np.ndarray, frames: int) -> float:
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(frames):
            f = frame.copy()
            cv2.putText(f, str(i), (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = buf.getvalue()
    t0 = time.perf_counter()
    buf2 = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf2, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for vf in src.decode(video=0):
            rgb = vf.to_ndarray(format="rgb24")
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return (time.perf_counter() - t0) / frames


def time_track(frame: np.ndarray, frames: int) -> float:
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(refine_landmarks=True, max_num_faces=1) as fm:
        fm.process(frame)
        t0 = time.perf_counter()
        for _ in range(frames):
            fm.process(frame)
    return (time.perf_counter() - t0) / frames


def time_render(renderer, frame: np.ndarray, lm: np.ndarray, frames: int) -> float:
    rng = np.random.default_rng(0)
    renderer.render(frame, lm)
    t0 = time.perf_counter()
    for _ in range(frames):
        jitter = lm + rng.normal(0, 0.3, lm.shape).astype(np.float32)
        renderer.render(frame, jitter)
    return (time.perf_counter() - t0) / frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--face", type=int, default=200, help="face width in pixels")
    args = ap.parse_args()
    from dicom_deid.faces.mask3d import Mask3DRenderer
    from dicom_deid.faces.swap import SwapRenderer

    frame = test_frame(args.face)
    lm = mesh.landmarks_from_image(frame)
    transcode = time_transcode(frame, args.frames)
    track = time_track(frame, args.frames)
    rows = {"frame": "1280x720", "face_width_px": round(float(np.ptp(lm[:, 0]))),
            "transcode_ms": transcode * 1e3, "track_ms": track * 1e3}
    for name, renderer in (("swap", SwapRenderer(donor_seed=1)),
                           ("swap_shape0.5", SwapRenderer(donor_seed=1, shape=0.5)),
                           ("mask3d", Mask3DRenderer())):
        t = time_render(renderer, frame, lm, args.frames)
        rows[f"{name}_render_ms"] = t * 1e3
        rows[f"{name}_render_over_transcode"] = t / transcode
        rows[f"{name}_implied_end_to_end_vs_transcode"] = transcode / (transcode + track + t)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
