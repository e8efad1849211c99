#!/usr/bin/env python
"""Body pose on ONNX Runtime against MediaPipe's Pose: speed per frame and agreement.

Both run pose_landmark_full in tracking mode (detector only when the pose is lost) on the
same frames, one whole `process` call per frame (pre- and post-processing in), in the same
process, the engines alternating in blocks so that both see the same machine load:

- speed: median wall ms per frame and CPU ms per frame (all threads of the process; less
  disturbed by the other programs on a shared machine), ONNX Runtime with --threads
  intra-op threads (0: onnxruntime's default) and MediaPipe as it comes (XNNPACK).
- stage (--stage): the keypoint stage per frame as the product runs it (KeypointExtractor,
  pose + hands, the face given by the face stage), keypoint engine mediapipe against onnx
  (pose and hands on ONNX Runtime with one thread; benchmarks/hands_onnx_vs_mediapipe.py
  measures the hands alone).
- agreement: per frame, the largest distance between the two engines' 33 points over the
  diagonal of MediaPipe's points' bounding box (issue 21's target: within 1 %), and over all
  points the mean distance and the share within 1 %, with landmark smoothing off on both and
  on on both.
- given region: the same with each frame's region taken from MediaPipe's graph (its
  pose_rect_from_landmarks), so that only the per-frame steps differ; and how often the
  auxiliary point 34's heatmap refinement sat within 0.001 of its 0.5 threshold, where float
  noise decides whether it applies (the seed of free tracking's divergence on this clip).

Frames: the first --frames frames of the people clip (Tears of Steel, (c) Blender
Foundation, CC BY 3.0) and the COCO pose photo of ../shared/data/pose (COCO 2017, CC BY 4.0);
nothing is written but the numbers.

    .venv/bin/python benchmarks/pose_onnx_vs_mediapipe.py --frames 60 --rounds 3 --threads 1 \\
        --output benchmarks/results/2026-12-07/pose_onnx_vs_mediapipe_1thread_i21.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data"
CLIP = SHARED / "video" / "people" / "tears_of_steel_clip01_640x360.mp4"


def clip_frames(count: int, path: Path = CLIP) -> list[np.ndarray]:
    import av

    if not path.is_file():
        sys.exit(f"{path}: not found")
    with av.open(str(path)) as container:
        out = []
        for frame in container.decode(video=0):
            if len(out) >= count:
                break
            out.append(frame.to_ndarray(format="rgb24"))
    return out


def mediapipe_pose(smooth: bool):
    import mediapipe as mp

    return mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1,
                                  smooth_landmarks=smooth, enable_segmentation=False,
                                  min_detection_confidence=0.5, min_tracking_confidence=0.5)


def mediapipe_points(result, width: int, height: int) -> np.ndarray | None:
    if result.pose_landmarks is None:
        return None
    return np.array([(p.x * width, p.y * height) for p in result.pose_landmarks.landmark])


def agreement(frames: list[np.ndarray], smooth: bool, device: str) -> dict:
    """Per-frame max point distance / bbox diagonal (%), both engines tracking the frames."""
    from dicom_deid.keypoints.onnx_pose import OnnxPose

    reference, onnx = mediapipe_pose(smooth), OnnxPose(device=device, smooth=smooth)
    errors, point_errors, only_one = [], [], 0
    try:
        for rgb in frames:
            h, w = rgb.shape[:2]
            a = mediapipe_points(reference.process(rgb), w, h)
            result = onnx.process(rgb)
            if (a is None) != (result is None):
                only_one += 1
                continue
            if a is None or result is None:
                continue
            b = result.landmarks[:, :2].astype(np.float64) * [w, h]
            diagonal = float(np.hypot(*(a.max(axis=0) - a.min(axis=0))))
            gaps = np.linalg.norm(a - b, axis=1) / diagonal * 100.0
            errors.append(float(gaps.max()))
            point_errors.append(gaps)
    finally:
        reference.close()
    return {"frames_compared": len(errors), "frames_found_by_one_engine_only": only_one,
            "mean_pct_of_diagonal": statistics.fmean(errors) if errors else None,
            "median_pct_of_diagonal": statistics.median(errors) if errors else None,
            "max_pct_of_diagonal": max(errors) if errors else None,
            "frames_within_1pct": sum(e <= 1.0 for e in errors),
            "points_mean_pct_of_diagonal": float(np.mean(point_errors)) if errors else None,
            "points_within_1pct_share": float(np.mean(np.concatenate(point_errors) <= 1.0))
            if errors else None}


def photo_agreement(device: str) -> dict:
    """Single photos: a fresh tracker per photo (detection, then landmarks), smoothing off."""
    import cv2

    from dicom_deid.keypoints.onnx_pose import OnnxPose

    out = {}
    for path in sorted(glob.glob(str(SHARED / "pose" / "*.jpg"))):
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        reference = mediapipe_pose(False)
        a = mediapipe_points(reference.process(rgb), w, h)
        reference.close()
        result = OnnxPose(device=device, smooth=False).process(rgb)
        if a is None or result is None:
            out[Path(path).name] = {"mediapipe": a is not None, "onnx": result is not None}
            continue
        b = result.landmarks[:, :2].astype(np.float64) * [w, h]
        diagonal = float(np.hypot(*(a.max(axis=0) - a.min(axis=0))))
        out[Path(path).name] = {"max_pct_of_diagonal":
                                float(np.linalg.norm(a - b, axis=1).max()) / diagonal * 100}
    return out


def given_region_agreement(frames: list[np.ndarray], device: str) -> dict:
    """Tracking with MediaPipe's own regions: each frame's landmarks from the region
    MediaPipe's graph tracked to (its pose_rect_from_landmarks stream), smoothing off. It
    separates the per-frame steps (crop, model, refinement, projection, next region) from the
    feedback of free tracking; the frames where the auxiliary point 34's heatmap refinement
    sits within 0.001 of its 0.5 confidence threshold are counted (a float-noise flip there
    moves that point, and so the next regions, by several pixels)."""
    from mediapipe.python.solution_base import SolutionBase

    from dicom_deid.faces import mp_geometry as geo
    from dicom_deid.keypoints import onnx_pose as op

    reference = SolutionBase(
        binary_graph_path="mediapipe/modules/pose_landmark/pose_landmark_cpu.binarypb",
        side_inputs={"model_complexity": 1, "smooth_landmarks": False,
                     "enable_segmentation": False, "smooth_segmentation": False,
                     "use_prev_landmarks": True},
        outputs=["pose_landmarks", "pose_rect_from_landmarks"])
    pose = op.OnnxPose(device=device, smooth=False)
    borderline: list[int] = []
    refine = op.refine_from_heatmap

    def watch(points: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
        col, row = int(points[34, 0] * 64), int(points[34, 1] * 64)
        if 0 <= col < 64 and 0 <= row < 64:
            window = heatmap[max(0, row - 4):row + 5, max(0, col - 4):col + 5, 34]
            if abs(float(_sigmoid(window.max())) - 0.5) < 1e-3:
                borderline.append(1)
        return refine(points, heatmap)

    op.refine_from_heatmap = watch
    region, gaps, sides = None, [], []
    try:
        for rgb in frames:
            h, w = rgb.shape[:2]
            out = reference.process(rgb)
            a = mediapipe_points(out, w, h)
            if region is not None:
                pose._rect = region
            result = pose.process(rgb)
            theirs = out.pose_rect_from_landmarks
            region = None if theirs is None else geo.Rect(
                theirs.x_center, theirs.y_center, theirs.width, theirs.height, theirs.rotation)
            if a is None or result is None or region is None or pose._rect is None:
                continue
            b = result.landmarks[:, :2].astype(np.float64) * [w, h]
            diagonal = float(np.hypot(*(a.max(axis=0) - a.min(axis=0))))
            gaps.append(float(np.linalg.norm(a - b, axis=1).max()) / diagonal * 100.0)
            sides.append(abs(pose._rect.w - region.w) * w)
    finally:
        op.refine_from_heatmap = refine
        reference.close()
    return {"frames_compared": len(gaps),
            "median_pct_of_diagonal": statistics.median(gaps) if gaps else None,
            "max_pct_of_diagonal": max(gaps) if gaps else None,
            "next_region_side_median_px": statistics.median(sides) if sides else None,
            "next_region_side_max_px": max(sides) if sides else None,
            "frames_point34_refinement_within_0.001_of_threshold": len(borderline)}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-x)))


def region_sensitivity(frames: list[np.ndarray], device: str, frame: int = 22) -> dict:
    """How far the points move when the tracked region moves by a fraction of a pixel: the
    ONNX pose tracks the clip up to `frame`, then the landmark model runs on that frame's
    region and on the same region shifted right by 0.064, 0.64 and 1.92 px. It bounds how
    closely two engines whose warps differ in float rounding can agree in tracking mode."""
    import dataclasses

    from dicom_deid.faces import mp_geometry as geo
    from dicom_deid.keypoints import onnx_pose as op

    pose = op.OnnxPose(device=device, smooth=False)
    for rgb in frames[:frame]:
        pose.process(rgb)
    rect, rgb = pose._rect, frames[frame]
    if rect is None:
        return {"error": f"no pose tracked at frame {frame}"}
    h, w = rgb.shape[:2]

    def points(r: geo.Rect) -> np.ndarray:
        out = pose._landmark(geo.image_tensor(geo.crop(rgb, r, 256, exact=True), 0.0, 1.0))
        raw = out[pose._lm_points].reshape(39, 5).astype(np.float64)
        norm = op.refine_from_heatmap(raw[:, :3] / 256, out[pose._lm_heatmap].reshape(64, 64, 39))
        return geo.project(norm, r)[:33, :2] * [w, h]

    base = points(rect)
    diagonal = float(np.hypot(*(base.max(axis=0) - base.min(axis=0))))
    out = {"frame": frame, "diagonal_px": diagonal}
    for shift in (1e-4, 1e-3, 3e-3):
        moved = np.linalg.norm(points(dataclasses.replace(rect, x=rect.x + shift)) - base,
                               axis=1)
        out[f"shift_{shift * w:.3f}px"] = {"max_px": float(moved.max()),
                                           "max_pct_of_diagonal": float(moved.max()) /
                                           diagonal * 100, "mean_px": float(moved.mean())}
    return out


def run_tracker(make, frames: list[np.ndarray]) -> tuple[list[float], float]:
    """Per-frame wall seconds, and CPU seconds per frame, of one tracker over the frames."""
    model = make()
    walls = []
    cpu0 = time.process_time()
    for rgb in frames:
        t0 = time.perf_counter()
        model.process(rgb)
        walls.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / len(frames)
    model.close()
    return walls, cpu


def speed(frames: list[np.ndarray], rounds: int, device: str, threads: int | None) -> dict:
    from dicom_deid.keypoints.onnx_pose import OnnxPose

    engines = {"mediapipe": lambda: mediapipe_pose(True),
               "onnx": lambda: OnnxPose(device=device, threads=threads, smooth=True)}
    walls: dict[str, list[float]] = {k: [] for k in engines}
    cpus: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for name, make in engines.items():
            w, c = run_tracker(make, frames)
            walls[name] += w
            cpus[name].append(c)
    out = {name: {"wall_ms_median": statistics.median(walls[name]) * 1e3,
                  "wall_ms_mean": statistics.fmean(walls[name]) * 1e3,
                  "cpu_ms_per_frame": statistics.fmean(cpus[name]) * 1e3}
           for name in engines}
    out["onnx_speedup_wall_median"] = out["mediapipe"]["wall_ms_median"] / \
        out["onnx"]["wall_ms_median"]
    out["onnx_speedup_cpu"] = out["mediapipe"]["cpu_ms_per_frame"] / \
        out["onnx"]["cpu_ms_per_frame"]
    return out


class KeypointStage:
    """The keypoint stage as the product runs it on a frame whose face the face stage has
    measured already: KeypointExtractor(face=False), pose + hands, on one keypoint engine;
    concurrent: pose and hands at once (the product's default since i21speed4)."""

    def __init__(self, engine: str, device: str, concurrent: bool = True) -> None:
        from dicom_deid.keypoints.extractor import KeypointExtractor
        from dicom_deid.onnx_device import ModelSettings

        self.extractor = KeypointExtractor(
            face=False, runtime=ModelSettings(device, keypoint_engine=engine),
            concurrent=concurrent)

    def process(self, rgb: np.ndarray) -> None:
        self.extractor.extract(rgb)

    def close(self) -> None:
        self.extractor.close()


def compare_engines(engines: dict, frames: list[np.ndarray], rounds: int, skip_first: bool = False
                    ) -> dict:
    """The engines ({'mediapipe': make, 'onnx': make, ...}) over the frames, alternating for
    ``rounds``; ``skip_first``: leave each run's first frame out of the wall times. Each other
    engine's speed-up is over 'mediapipe'; the 1-minute load average is kept per run."""
    walls: dict[str, list[float]] = {k: [] for k in engines}
    cpus: dict[str, list[float]] = {k: [] for k in engines}
    loads: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for name, make in engines.items():
            loads[name].append(round(os.getloadavg()[0], 2))
            w, c = run_tracker(make, frames)
            walls[name] += w[1:] if skip_first else w
            cpus[name].append(c)
    out: dict = {name: {"wall_ms_median": statistics.median(walls[name]) * 1e3,
                        "wall_ms_mean": statistics.fmean(walls[name]) * 1e3,
                        "cpu_ms_per_frame": statistics.fmean(cpus[name]) * 1e3,
                        "cpu_ms_per_frame_rounds": [c * 1e3 for c in cpus[name]],
                        "load_average_1min_at_start": loads[name]}
                 for name in engines}
    for name in engines:
        if name == "mediapipe":
            continue
        suffix = "" if name == "onnx" else f"_{name}"
        out[f"onnx_speedup_wall_median{suffix}"] = out["mediapipe"]["wall_ms_median"] / \
            out[name]["wall_ms_median"]
        out[f"onnx_speedup_wall_mean{suffix}"] = out["mediapipe"]["wall_ms_mean"] / \
            out[name]["wall_ms_mean"]
        out[f"onnx_speedup_cpu{suffix}"] = out["mediapipe"]["cpu_ms_per_frame"] / \
            out[name]["cpu_ms_per_frame"]
    return out


def stage_speed(frames: list[np.ndarray], rounds: int, device: str) -> dict:
    """Per frame: the keypoint stage on MediaPipe (pose and hands one after the other, as the
    product ran them before i21speed4) against ONNX Runtime as the product runs it now
    (concurrent), and, for the record, ONNX one after the other and MediaPipe concurrent."""
    return compare_engines({
        "mediapipe": lambda: KeypointStage("mediapipe", device, concurrent=False),
        "onnx": lambda: KeypointStage("onnx", device),
        "onnx_sequential": lambda: KeypointStage("onnx", device, concurrent=False),
        "mediapipe_concurrent": lambda: KeypointStage("mediapipe", device),
    }, frames, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads (0: onnxruntime's default)")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--stage", action="store_true",
                        help="also the keypoint stage (pose + hands) per frame, both engines")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    frames = clip_frames(args.frames)
    threads = args.threads or None
    report: dict = {"frames": len(frames), "clip": CLIP.name, "device": args.device,
                    "onnx_threads": threads or "default", "rounds": args.rounds,
                    "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    if not args.skip_agreement:
        report["agreement_smoothing_off"] = agreement(frames, False, args.device)
        report["agreement_smoothing_on"] = agreement(frames, True, args.device)
        report["photos_smoothing_off"] = photo_agreement(args.device)
        report["region_sensitivity"] = region_sensitivity(frames, args.device)
        report["given_mediapipe_region"] = given_region_agreement(frames, args.device)
    if not args.skip_speed:
        report["speed"] = speed(frames, args.rounds, args.device, threads)
    if args.stage:
        report["keypoint_stage"] = stage_speed(frames, args.rounds, args.device)
    report["load_average_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
