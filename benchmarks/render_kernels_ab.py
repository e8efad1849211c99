#!/usr/bin/env python
"""Two render kernels of one tree against another's, on the same inputs: equal outputs and CPU.

`mesh.rasterize` (every swap and mask3d render) and `donors.fill_outside` (composite's
`fill_from`, every swapped face) are loaded from each tree's source file side by side in one
process; the inputs are those of the swap's `mesh_maps` and `composite` calls on faces_speed's
720p clip (tracked with this tree), plus random fill_outside cases of odd sizes. Rounds
alternate between the trees; CPU is this thread's.

    .venv/bin/python benchmarks/render_kernels_ab.py --base /work/wt/base30 --output r.json
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def capture(frames: int) -> tuple[list[tuple], list[tuple]]:
    import faces_speed as fs

    from dicom_deid.faces import FaceReplacer, render_mesh
    from dicom_deid.faces.media import read_video

    raster_cases: list[tuple] = []
    fill_cases: list[tuple] = []
    mesh_maps, composite = render_mesh.mesh_maps, render_mesh.composite

    @functools.wraps(mesh_maps)
    def grab_maps(xy, depth, tris, parts, uv, shape, scale=1.0, extra=None):  # type: ignore[no-untyped-def]
        rows, cols = shape
        small = (max(2, int(np.ceil(rows * scale))), max(2, int(np.ceil(cols * scale))))
        pts = (xy + 0.5) * np.array([small[1] / cols, small[0] / rows], np.float32) - 0.5
        raster_cases.append((pts.copy(), depth.copy(), tris, small))
        return mesh_maps(xy, depth, tris, parts, uv, shape, scale, extra)

    @functools.wraps(composite)
    def grab_composite(frame, roi, rendered, rendered_mask, cover, feather):  # type: ignore[no-untyped-def]
        rows, cols = rendered_mask.shape
        half = (max(1, cols // 2), max(1, rows // 2))
        fill_cases.append((cv2.resize(rendered, half, interpolation=cv2.INTER_AREA),
                           cv2.resize(rendered_mask, half, interpolation=cv2.INTER_AREA) >= 255, 4))
        return composite(frame, roi, rendered, rendered_mask, cover, feather)

    render_mesh.mesh_maps, render_mesh.composite = grab_maps, grab_composite
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fs.make_clip(Path(tmp) / "clip.mp4", frames)
            replacer = FaceReplacer("swap", donor_seed=1234, fps=25.0, leak_check=False)
            try:
                for rgb in read_video(Path(tmp) / "clip.mp4"):
                    for face in replacer.tracker.update(rgb):
                        if face.landmarks is not None and face.status == "tracked":
                            replacer._render(rgb.copy(), rgb, face.landmarks,
                                             np.zeros(rgb.shape[:2], np.uint8), face.track_id)
            finally:
                replacer.close()
    finally:
        render_mesh.mesh_maps, render_mesh.composite = mesh_maps, composite
    rng = np.random.default_rng(0)
    for shape in [(192, 192), (7, 9), (15, 33), (101, 77), (1, 1), (2, 50)]:
        img = (rng.random(shape + (3,)) * 255).astype(np.float32)
        mask = rng.random(shape) < 0.5
        fill_cases += [(img, mask, 6), (img, mask.astype(np.uint8), 3),
                       (img.astype(np.uint8), mask, 6), (img, np.zeros(shape, bool), 2)]
    return raster_cases, fill_cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the other tree")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)
    trees = {"base": args.base.resolve(), "this": REPO}
    raster_cases, fill_cases = capture(args.frames)
    mods = {k: {"mesh": load(t / "dicom_deid/faces/mesh.py", f"mesh_{k}"),
                "donors": load(t / "dicom_deid/faces/donors.py", f"donors_{k}")}
            for k, t in trees.items()}
    for case in raster_cases:
        a, b = (mods[k]["mesh"].rasterize(*case) for k in trees)
        for field in ("ys", "xs", "tri", "bary"):
            if not np.array_equal(getattr(a, field), getattr(b, field)):
                raise SystemExit(f"rasterize differs in {field}")
    for img, mask, levels in fill_cases:
        a, b = (mods[k]["donors"].fill_outside(img, mask, levels) for k in trees)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            raise SystemExit(f"fill_outside differs on {img.shape}")
    result: dict = {"trees": {k: str(v) for k, v in trees.items()},
                    "cases": {"rasterize": len(raster_cases), "fill_outside": len(fill_cases)},
                    "identical": True, "load_start": os.getloadavg()[0]}
    kernels = {"rasterize": ("mesh", "rasterize", raster_cases, {}),
               "fill_outside": ("donors", "fill_outside", fill_cases[:len(fill_cases) - 24], {})}
    for name, (mod, fn, cases, _) in kernels.items():
        totals = dict.fromkeys(trees, 0.0)
        for _ in range(args.rounds):
            for k in trees:
                f = getattr(mods[k][mod], fn)
                start = time.thread_time()
                for case in cases:
                    f(*case)
                totals[k] += time.thread_time() - start
        calls = args.rounds * len(cases)
        result[name] = {"cpu_ms_per_call": {k: round(1000 * v / calls, 3) for k, v in totals.items()},
                        "speedup": round(totals["base"] / totals["this"], 3)}
        print(name, result[name])
    result["load_end"] = os.getloadavg()[0]
    print("identical outputs on", result["cases"])
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print("wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
