#!/usr/bin/env python
"""How close the ONNX face models' points are to MediaPipe's: NME in % of the inter-ocular
distance (outer eye corners 33-263, on MediaPipe's points), and the detector's box error.

- refined: OnnxMesh("attention") against FaceMesh(refine_landmarks=True), the product's 478;
- plain: OnnxMesh("none") against FaceMesh(refine_landmarks=False), 468;
- iris: OnnxMesh("iris") (plain mesh + iris model) against the refined FaceMesh.

On London Set photos (every --step-th; face crops as the tracker makes them, 3 frames each:
the first from the detector, then tracking) and on the frames of a GRID clip followed in
tracking mode. The tests (tests/faces/test_onnx_models.py) assert the 0.5 % target; this
prints the numbers. Data: Face Research Lab London Set (DeBruine & Jones 2017, CC BY 4.0),
GRID (Cooke et al. 2006, CC BY 4.0); only aggregates are written.

    .venv/bin/python benchmarks/onnx_equivalence.py --step 4 \\
        --output benchmarks/results/2026-12-07/onnx_equivalence_i21.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data"


def _crop(rgb: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    s = 256 / (2.0 * max(x1 - x0, y1 - y0))
    m = np.float32([[s, 0, 128 - s * (x0 + x1) / 2], [0, s, 128 - s * (y0 + y1) / 2]])
    return cv2.warpAffine(rgb, m, (256, 256))


def _nme(got: np.ndarray, ref: np.ndarray) -> float:
    iod = float(np.linalg.norm(ref[33, :2] - ref[263, :2]))
    return float(np.linalg.norm(got[:, :2] - ref[:, :2], axis=1).mean() / iod * 100.0)


class _Plain:
    """MediaPipe's plain FaceMesh as a mesh session (468 points in crop pixels)."""

    def __init__(self) -> None:
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                    refine_landmarks=False)

    def landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        from dicom_deid.faces.models import landmark_array

        found = self.mesh.process(crop).multi_face_landmarks
        return None if not found else landmark_array(found[0]) * crop.shape[1]

    def close(self) -> None:
        self.mesh.close()


def _summary(values: list[float]) -> dict:
    return {"n": len(values), "mean_pct": round(float(np.mean(values)), 4),
            "max_pct": round(float(np.max(values)), 4)} if values else {"n": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=4, help="every step-th London photo")
    parser.add_argument("--clip", default="bbaf2n.mpg", help="GRID clip")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import av

    from dicom_deid.faces.models import MediaPipeFaceModels
    from dicom_deid.faces.onnx_models import OnnxFaceModels

    mp_models, onnx_models = MediaPipeFaceModels(), OnnxFaceModels(device="cpu")
    pairs = {"refined": (mp_models.mesh_session, lambda: onnx_models.mesh_session("attention")),
             "plain": (_Plain, lambda: onnx_models.mesh_session("none")),
             "iris": (mp_models.mesh_session, lambda: onnx_models.mesh_session("iris"))}
    photos = sorted(glob.glob(str(SHARED / "faces" / "london" / "*" / "*.jpg")))[::args.step]
    if not photos:
        sys.exit(f"no photos under {SHARED / 'faces' / 'london'}")
    results: dict = {"photos": {}, "clip": {}, "detector": {}}
    box_err = []
    crops = []
    for path in photos:
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        ref, got = mp_models.detect(rgb), onnx_models.detect(rgb)
        if ref and got:
            size = ref[0].box[2] - ref[0].box[0]
            box_err.append(float(np.abs(np.subtract(got[0].box, ref[0].box)).max() / size * 100))
        crops.append(_crop(rgb, ref[0].box))
    results["detector"] = {"photos": len(photos), "both_found": len(box_err),
                           "box_max_err_pct_of_width": _summary(box_err)}
    with av.open(str(SHARED / "video" / "grid" / args.clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    clip_box = mp_models.detect(frames[0])[0].box
    for name, (make_ref, make_ours) in pairs.items():
        values, misses = [], 0
        for crop in crops:
            ref_s, ours = make_ref(), make_ours()
            for _ in range(3):
                ref, got = ref_s.landmarks(crop), ours.landmarks(crop)
                if ref is None or got is None:
                    misses += (ref is None) != (got is None)
                    continue
                values.append(_nme(got, ref))
            ref_s.close()
        results["photos"][name] = {**_summary(values), "found_by_one_only": misses}
        values, misses = [], 0
        ref_s, ours = make_ref(), make_ours()
        for rgb in frames:
            crop = _crop(rgb, clip_box)
            ref, got = ref_s.landmarks(crop), ours.landmarks(crop)
            if ref is None or got is None:
                misses += (ref is None) != (got is None)
                continue
            values.append(_nme(got, ref))
        ref_s.close()
        results["clip"][name] = {**_summary(values), "found_by_one_only": misses,
                                 "frames": len(frames)}
        print(name, "photos", results["photos"][name], "clip", results["clip"][name],
              flush=True)
    print("detector", results["detector"])
    report = {"command": " ".join(sys.argv), "nme": "mean point distance / inter-ocular "
              "distance (33-263), in %", "target_pct": 0.5, **results}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
