#!/usr/bin/env python
"""Hands on ONNX Runtime against MediaPipe's Hands: agreement, speed per model and per frame,
and the whole keypoint stage.

Both run palm_detection_full + hand_landmark_full (Hands(model_complexity=1)) on the same
frames, one whole `process` call per frame (pre- and post-processing in), in the same process,
the engines alternating in blocks so that both see the same machine load. ONNX Runtime runs
with --threads intra-op threads (the product's default: 1), MediaPipe as it comes (XNNPACK).

- agreement (points over the diagonal of MediaPipe's hand's bounding box, issue 21's target
  1 %): static mode on every frame with a hand and on mirror images; lock-step (each frame's
  regions as MediaPipe's graph makes them, the ONNX landmark step on them); free-running
  tracking on both engines.
- speed per model: the palm detector (static mode on frames without a hand, where each
  call is one palm detection and nothing else) and the hand landmark model (tracking one
  hand with max_num_hands=1 over frames where it stays found, where each call after the
  first is one landmark call and nothing else).
- speed per frame: hands as the keypoint stage runs them (tracking, max_num_hands=2, palm
  detection whenever fewer than two hands are tracked) on the clip's first --frames frames.
- stage: the keypoint stage per frame as the product runs it (KeypointExtractor, pose +
  hands, the face given by the face stage): keypoint engine mediapipe with pose and hands one
  after the other (the baseline, as the product ran it before) against onnx with the frame's
  parts at once (the product now), and onnx one after the other and mediapipe at once for the
  record; the 1-minute load average is kept per run.

Timings: median wall ms per frame and CPU ms per frame (all threads of the process; less
disturbed by the other programs on a shared machine).

Frames: Tears of Steel ((c) Blender Foundation, mango.blender.org, CC BY 3.0), the people
clip of ../shared/data (frames 21-129 hold one or two hands); nothing is written but numbers.

    .venv/bin/python benchmarks/hands_onnx_vs_mediapipe.py --frames 130 --rounds 3 \\
        --threads 1 --output benchmarks/results/2026-12-07/hands_onnx_vs_mediapipe_i21.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.pose_onnx_vs_mediapipe import (  # noqa: E402  (the same clip and timing)
    CLIP,
    clip_frames,
    compare_engines,
    stage_speed,
)

GRAPH = "mediapipe/modules/hand_landmark/hand_landmark_tracking_cpu.binarypb"
# Frames of the clip without a hand (palm detection only) and with one hand tracked
# throughout (checked by the run: `palm_calls` below).
NO_HANDS = (0, 20)
ONE_HAND = (21, 65)


def mediapipe_hands(static: bool, max_hands: int = 2):
    import mediapipe as mp

    return mp.solutions.hands.Hands(static_image_mode=static, max_num_hands=max_hands,
                                    model_complexity=1, min_detection_confidence=0.5,
                                    min_tracking_confidence=0.5)


def onnx_hands(static: bool, max_hands: int = 2, device: str = "cpu", threads: int | None = 1):
    from dicom_deid.keypoints.onnx_hands import OnnxHands

    return OnnxHands(device=device, threads=threads, static_image_mode=static,
                     max_num_hands=max_hands)


def _mp_points(result, w: int, h: int) -> list[np.ndarray]:
    return [np.array([(p.x * w, p.y * h) for p in lm.landmark])
            for lm in result.multi_hand_landmarks or []]


def _gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / float(np.hypot(*(a.max(axis=0) - a.min(axis=0)))) \
        * 100.0


def _paired(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    return [min((_gaps(hand, other) for other in b), key=lambda g: float(g.max()))
            for hand in a]


def _summary(gaps: list[np.ndarray], frames: int, mismatched: int, labels_apart: int) -> dict:
    if not gaps:
        return {"frames": frames, "hands_compared": 0}
    worst = [float(g.max()) for g in gaps]
    points = np.concatenate(gaps)
    return {"frames": frames, "frames_hand_count_differs": mismatched,
            "hands_compared": len(gaps), "handedness_labels_differ": labels_apart,
            "hand_max_pct_of_diagonal": {"median": statistics.median(worst),
                                         "mean": statistics.fmean(worst), "max": max(worst)},
            "hands_all_points_within_1pct": sum(w <= 1.0 for w in worst),
            "points_mean_pct_of_diagonal": float(points.mean()),
            "points_within_1pct_share": float(np.mean(points <= 1.0))}


def agreement_static(frames: list[np.ndarray], device: str) -> dict:
    reference, onnx = mediapipe_hands(True), onnx_hands(True, device=device)
    gaps, mismatched, labels_apart = [], 0, 0
    images = [f for f in frames if f is not None]
    images += [f[:, ::-1].copy() for f in frames[21::4]]
    for rgb in images:
        h, w = rgb.shape[:2]
        result = reference.process(rgb)
        a = _mp_points(result, w, h)
        found = onnx.process(rgb)
        if len(found) != len(a):
            mismatched += 1
            continue
        labels = [c.classification[0].label for c in result.multi_handedness or []]
        labels_apart += sum(x != y.label for x, y in zip(labels, found, strict=True))
        gaps += _paired(a, [f.landmarks[:, :2] * [w, h] for f in found])
    reference.close()
    return _summary(gaps, len(images), mismatched, labels_apart)


def agreement_lock_step(frames: list[np.ndarray], device: str) -> dict:
    from mediapipe.python.solution_base import SolutionBase

    from dicom_deid.faces import mp_geometry as geo
    from dicom_deid.keypoints.onnx_hands import associate

    def rects(values) -> list:
        return [geo.Rect(r.x_center, r.y_center, r.width, r.height, r.rotation)
                for r in values or []]

    graph = SolutionBase(binary_graph_path=GRAPH, side_inputs={
        "model_complexity": 1, "num_hands": 2, "use_prev_landmarks": True},
        outputs=["multi_hand_landmarks", "hand_rects_from_landmarks",
                 "hand_rects_from_palm_detections"])
    onnx = onnx_hands(False, device=device)
    previous: list = []
    gaps, mismatched = [], 0
    for rgb in frames:
        h, w = rgb.shape[:2]
        result = graph.process({"image": rgb})
        regions = associate(rects(result.hand_rects_from_palm_detections), previous)
        found = [r for r in (onnx.landmarks(rgb, region) for region in regions) if r is not None]
        a = _mp_points(result, w, h)
        previous = rects(result.hand_rects_from_landmarks)
        if len(found) != len(a):
            mismatched += 1
            continue
        gaps += [_gaps(x, y.landmarks[:, :2] * [w, h]) for x, y in zip(a, found, strict=True)]
    graph.close()
    return _summary(gaps, len(frames), mismatched, 0)


def agreement_tracking(frames: list[np.ndarray], device: str) -> dict:
    reference, onnx = mediapipe_hands(False), onnx_hands(False, device=device)
    gaps, mismatched = [], 0
    for rgb in frames:
        h, w = rgb.shape[:2]
        a = _mp_points(reference.process(rgb), w, h)
        found = onnx.process(rgb)
        if len(found) != len(a):
            mismatched += 1
            continue
        gaps += _paired(a, [f.landmarks[:, :2] * [w, h] for f in found])
    reference.close()
    return _summary(gaps, len(frames), mismatched, 0)


class _Counted:
    """OnnxHands that counts its palm detections and landmark calls."""

    def __init__(self, hands) -> None:
        self.hands, self.palm_calls, self.landmark_calls = hands, 0, 0
        detect, landmarks = hands.detect, hands.landmarks

        def counted_detect(rgb):
            self.palm_calls += 1
            return detect(rgb)

        def counted_landmarks(rgb, rect):
            self.landmark_calls += 1
            return landmarks(rgb, rect)

        hands.detect, hands.landmarks = counted_detect, counted_landmarks


def model_speed(frames: list[np.ndarray], rounds: int, device: str, threads: int | None) -> dict:
    palm_frames = frames[NO_HANDS[0]:NO_HANDS[1]]
    lm_frames = frames[ONE_HAND[0]:ONE_HAND[1]]
    palm_check, lm_check = _Counted(onnx_hands(True, device=device)), \
        _Counted(onnx_hands(False, 1, device=device))
    for rgb in palm_frames:
        palm_check.hands.process(rgb)
    found = [len(lm_check.hands.process(rgb)) for rgb in lm_frames]
    out = {
        "palm_detection": compare_engines(
            {"mediapipe": lambda: mediapipe_hands(True),
             "onnx": lambda: onnx_hands(True, device=device, threads=threads)},
            palm_frames, rounds),
        "palm_detection_calls": {"frames": len(palm_frames), "onnx_palm_calls":
                                 palm_check.palm_calls, "onnx_landmark_calls":
                                 palm_check.landmark_calls},
        # The first frame of each run detects the palm; the rest are landmark calls only.
        "hand_landmark": compare_engines(
            {"mediapipe": lambda: mediapipe_hands(False, 1),
             "onnx": lambda: onnx_hands(False, 1, device=device, threads=threads)},
            lm_frames, rounds, skip_first=True),
        "hand_landmark_calls": {"frames": len(lm_frames), "frames_with_the_hand": sum(found),
                                "onnx_palm_calls": lm_check.palm_calls,
                                "onnx_landmark_calls": lm_check.landmark_calls},
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=130)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads (0: onnxruntime's default)")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-stage", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    frames = clip_frames(max(args.frames, ONE_HAND[1]))
    threads = args.threads or None
    report: dict = {"frames": args.frames, "clip": CLIP.name, "device": args.device,
                    "onnx_threads": threads or "default", "rounds": args.rounds,
                    "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    if not args.skip_agreement:
        report["agreement_static"] = agreement_static(frames[21:args.frames], args.device)
        report["agreement_lock_step"] = agreement_lock_step(frames[:args.frames], args.device)
        report["agreement_tracking"] = agreement_tracking(frames[:args.frames], args.device)
    if not args.skip_speed:
        report["models"] = model_speed(frames, args.rounds, args.device, threads)
        report["hands_per_frame"] = compare_engines(
            {"mediapipe": lambda: mediapipe_hands(False),
             "onnx": lambda: onnx_hands(False, device=args.device, threads=threads)},
            frames[:args.frames], args.rounds)
    if not args.skip_stage:
        report["keypoint_stage"] = stage_speed(frames[:args.frames], args.rounds, args.device)
    report["load_average_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
