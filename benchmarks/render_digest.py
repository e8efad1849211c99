#!/usr/bin/env python
"""A digest of what the swap and mask3d renderers draw, and the CPU of each render stage.

For speed work on the render that must not change its pixels: run it once per tree (the
package is imported from PYTHONPATH or the current directory) and compare the digests. The
faces are tracked once per clip and every tracked face is rendered through
`FaceReplacer._render`, as the product does; the digest is the sha256 of every rendered frame
in order. The clips: faces_speed's generated 720p clip, and the first frames of each GRID
clip in ../shared/data/video/grid (none of their pixels is stored).

    PYTHONPATH=/work/wt/base30 .venv/bin/python benchmarks/render_digest.py --output a.json
    .venv/bin/python benchmarks/render_digest.py --output b.json
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE))

STAGES = {
    "render_mesh": ("mesh_maps", "sample_texture", "match_colour_lab", "composite", "fill_from",
                    "skin_pixels", "masked_blur", "opening_mask"),
    "mesh": ("rasterize",),
    "eyes": ("paint_eye",),
    "mouth": ("paint_mouth",),
}


def _timed(totals: dict[str, float], fn: Callable, key: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.thread_time() - start
    return wrapper


def clips(frames: int, tmp: Path) -> list[tuple[str, list[np.ndarray]]]:
    import faces_speed as fs

    from dicom_deid.faces.media import read_video

    fs.make_clip(tmp / "clip.mp4", frames)
    out = [("faces_speed_clip", list(read_video(tmp / "clip.mp4")))]
    shared = Path(os.environ.get("DICOM_DEID_SHARED", HERE.parent.parent / "shared"))
    data = shared / "data" / "video" / "grid"
    grid = sorted(glob.glob(str(data / "*.mpg")))
    if not grid:
        # A digest of the generated clip alone would compare far less than intended.
        print(f"render_digest: no GRID clips under {data} (set DICOM_DEID_SHARED); generated clip only",
              file=sys.stderr)
    for path in grid:
        video = []
        for rgb in read_video(Path(path)):
            video.append(rgb)
            if len(video) >= frames:
                break
        out.append((Path(path).name, video))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40, help="frames per clip")
    ap.add_argument("--methods", default="swap,mask3d")
    ap.add_argument("--repeats", type=int, default=2, help="timed renders of each face")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)

    import dicom_deid
    from dicom_deid.faces import FaceReplacer, eyes, mesh, mouth, render_mesh

    modules = {"render_mesh": render_mesh, "mesh": mesh, "eyes": eyes, "mouth": mouth}
    totals: dict[str, float] = collections.defaultdict(float)
    for mod, names in STAGES.items():
        for name in names:
            setattr(modules[mod], name, _timed(totals, getattr(modules[mod], name), name))
    result: dict = {"package": str(Path(dicom_deid.__file__).parent), "load": os.getloadavg()[0],
                    "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        videos = clips(args.frames, Path(tmp))
        for method in args.methods.split(","):
            digest = hashlib.sha256()
            totals.clear()
            renders, cpu = 0, 0.0
            per_clip = {}
            for name, frames in videos:
                replacer = FaceReplacer(method, donor_seed=1234, fps=25.0, leak_check=False)
                clip_digest = hashlib.sha256()
                try:
                    for rgb in frames:
                        out = rgb.copy()
                        covered = np.zeros(rgb.shape[:2], np.uint8)
                        for face in replacer.tracker.update(rgb):
                            if face.landmarks is None or face.status != "tracked":
                                continue
                            for i in range(args.repeats):
                                work = out.copy() if i < args.repeats - 1 else out
                                start = time.thread_time()
                                drawn = replacer._render(work, rgb, face.landmarks, covered.copy()
                                                         if i < args.repeats - 1 else covered,
                                                         face.track_id)
                                cpu += time.thread_time() - start
                                renders += 1
                            if drawn is not None:
                                out = drawn
                        clip_digest.update(out.tobytes())
                        clip_digest.update(covered.tobytes())
                finally:
                    replacer.close()
                per_clip[name] = clip_digest.hexdigest()
                digest.update(clip_digest.digest())
            result["methods"][method] = {
                "digest": digest.hexdigest(), "clips": per_clip, "renders": renders,
                "render_cpu_ms": round(1000 * cpu / max(renders, 1), 2),
                "stages_cpu_ms": {k: round(1000 * v / max(renders, 1), 2)
                                  for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}}
            print(method, json.dumps(result["methods"][method]))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print("wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
