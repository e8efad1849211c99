"""The ONNX pose (keypoints/onnx_pose.py) against MediaPipe's Pose running the same models.

Both run pose_detection + pose_landmark_full; the ONNX path re-does MediaPipe's steps
(anchors, weighted NMS, alignment regions, heatmap refinement, projection, tracking and the
landmark filters), so on the same frames the points must agree within 1 % of the body's
bounding-box diagonal (issue 21's target). A single frame (detection + landmarks) agrees to
about 0.03 % of it, and a tracked frame given MediaPipe's own region to 0.001 % (the crop is
MediaPipe's warp, see mp_geometry.crop). Tracking on its own, each frame's region comes from
the previous frame's points, and the two engines part: pose_landmark_full's heatmap
refinement of a point applies only where the window's best confidence is >= 0.5, and on the
clip below the point above the head sits at 0.50009 on frame 26, where moving the region by
0.0005 px (the models' float noise between TFLite and ONNX Runtime gives 0.001 px) flips it
and moves that point by 5.6 px; the heavily smoothed auxiliary points carry this into the
next 30 regions, and the landmark model is very sensitive to where its crop falls. So the
free tracking tests hold the mean point and the share of points within the target, and the
detection frame to the single-frame bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicom_deid.keypoints import onnx_pose
from dicom_deid.keypoints.onnx_pose import OneEuro, OnnxPose, alignment_rect, refine_from_heatmap
from tests.helpers import shared_data

TARGET_PCT = 1.0


def _clip(count: int) -> list[np.ndarray]:
    import av

    path = shared_data("video", "people", "tears_of_steel_clip01_640x360.mp4")
    with av.open(str(path)) as container:
        out = []
        for frame in container.decode(video=0):
            if len(out) >= count:
                break
            out.append(frame.to_ndarray(format="rgb24"))
    return out


def _mediapipe(smooth: bool, static: bool = False):
    import mediapipe as mp

    return mp.solutions.pose.Pose(static_image_mode=static, model_complexity=1,
                                  smooth_landmarks=smooth, enable_segmentation=False)


def _points(result, w: int, h: int) -> np.ndarray | None:
    if result.pose_landmarks is None:
        return None
    return np.array([(p.x * w, p.y * h) for p in result.pose_landmarks.landmark])


def _gaps_pct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each point's distance over the diagonal of a's bounding box, in %."""
    return np.linalg.norm(a - b, axis=1) / float(np.hypot(*(a.max(axis=0) - a.min(axis=0)))) \
        * 100.0


def _gap_pct(a: np.ndarray, b: np.ndarray) -> float:
    return float(_gaps_pct(a, b).max())


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return _clip(40)


def test_single_frames_agree_with_mediapipe(frames) -> None:
    """Detection + landmarks on one frame: the models and every step but tracking."""
    reference = _mediapipe(False, static=True)
    gaps, visibility = [], []
    for rgb in frames[20::5]:
        h, w = rgb.shape[:2]
        a = _points(reference.process(rgb), w, h)
        result = OnnxPose(device="cpu", smooth=False).process(rgb)
        assert (a is None) == (result is None)
        if a is None:
            continue
        gaps.append(_gap_pct(a, result.landmarks[:, :2] * [w, h]))
        visibility.append(np.abs(result.visibility - np.array(
            [p.visibility for p in reference.process(rgb).pose_landmarks.landmark])).max())
    reference.close()
    assert len(gaps) >= 3
    assert max(gaps) < 0.1, gaps
    assert max(visibility) < 0.01


@pytest.mark.parametrize("smooth", [False, True])
def test_tracking_agrees_with_mediapipe(frames, smooth: bool) -> None:
    reference, onnx = _mediapipe(smooth), OnnxPose(device="cpu", smooth=smooth)
    gaps = []
    for rgb in frames:
        h, w = rgb.shape[:2]
        a = _points(reference.process(rgb), w, h)
        result = onnx.process(rgb)
        assert (a is None) == (result is None)
        if a is not None:
            gaps.append(_gaps_pct(a, result.landmarks[:, :2] * [w, h]))
    reference.close()
    assert len(gaps) >= 15
    assert gaps[0].max() < 0.1                # the detection frame
    assert float(np.mean(np.concatenate(gaps))) < 0.6
    assert float(np.mean(np.concatenate(gaps) <= TARGET_PCT)) > 0.8


def test_blank_frame_has_no_pose() -> None:
    pose = OnnxPose(device="cpu")
    assert pose.process(np.zeros((240, 320, 3), np.uint8)) is None
    assert len(pose.detect(np.zeros((240, 320, 3), np.uint8))) == 0


def test_anchor_count_matches_the_detector() -> None:
    assert len(onnx_pose._ANCHORS) == 2254


def test_alignment_rect_is_centred_on_the_start_and_points_up() -> None:
    # Start at the centre, end straight above: no rotation, side 2 x distance x 1.25.
    rect = alignment_rect(np.array([0.5, 0.5]), np.array([0.5, 0.3]), 100, 100, 1.25)
    assert (rect.x, rect.y) == (0.5, 0.5)
    assert rect.w == pytest.approx(0.5) and rect.h == pytest.approx(0.5)
    assert rect.rotation == pytest.approx(0.0)
    # End to the right of the start (the head to the right): the crop is turned by 90
    # degrees, clockwise in image coordinates (y down), so that the head is up in it.
    rect = alignment_rect(np.array([0.5, 0.5]), np.array([0.7, 0.5]), 100, 100, 1.0)
    assert rect.rotation == pytest.approx(math.pi / 2)
    assert rect.w == pytest.approx(0.4)


def test_heatmap_refinement_moves_points_to_the_peak_only_when_confident() -> None:
    heatmap = np.full((64, 64, 2), -10.0, np.float32)
    heatmap[20, 30, 0] = 10.0                  # a confident peak near point 0
    heatmap[40, 10, 1] = -0.5                  # below 0.5 after the sigmoid: not refined
    points = np.array([[31.5 / 64, 21.5 / 64, 0.0], [10.2 / 64, 40.7 / 64, 0.0]])
    out = refine_from_heatmap(points, heatmap)
    assert out[0, 0] == pytest.approx(30 / 64, abs=1e-3)
    assert out[0, 1] == pytest.approx(20 / 64, abs=1e-3)
    np.testing.assert_array_equal(out[1], points[1])


def test_one_euro_holds_a_still_point_and_follows_a_fast_one() -> None:
    still, moving = OneEuro(0.1, 40.0), OneEuro(0.1, 40.0)
    t = 0.0
    assert still.apply(t, 1.0, np.array([5.0]))[0] == 5.0
    moving.apply(t, 1.0, np.array([0.0]))
    for step in range(1, 6):
        t += 1 / 30
        jitter = still.apply(t, 1.0, np.array([5.0 + (0.01 if step % 2 else -0.01)]))[0]
        fast = moving.apply(t, 1.0, np.array([float(step)]))[0]
    assert abs(jitter - 5.0) < 0.005           # jitter damped
    assert fast > 4.0                           # a fast move followed closely


def test_extractor_uses_onnx_pose_by_default(frames) -> None:
    from dicom_deid.keypoints.extractor import KeypointExtractor
    from dicom_deid.onnx_device import ModelSettings

    assert ModelSettings().resolved_keypoint_engine() == "onnx"
    with KeypointExtractor(face=False, hands=False) as onnx, KeypointExtractor(
            face=False, hands=False,
            runtime=ModelSettings(keypoint_engine="mediapipe")) as reference:
        assert isinstance(onnx._pose, OnnxPose) and not isinstance(reference._pose, OnnxPose)
        gaps = []
        for rgb in frames[21:31]:
            a, b = onnx.extract(rgb), reference.extract(rgb)
            assert (a.pose is None) == (b.pose is None)
            if a.pose is not None:
                assert a.pose.shape == (33, 3) and a.pose_visibility.shape == (33,)
                gaps.append(_gaps_pct(b.pose[:, :2], a.pose[:, :2]))
    assert gaps and float(np.mean(np.concatenate(gaps))) < 0.6


def test_bad_keypoint_engine_is_refused() -> None:
    from dicom_deid.onnx_device import ModelSettings, ModelSettingsError

    with pytest.raises(ModelSettingsError, match="keypoint engine"):
        ModelSettings(keypoint_engine="tflite")


def test_deidentifier_and_cli_carry_the_keypoint_engine() -> None:
    import argparse

    from dicom_deid.commands.deidentify import register
    from dicom_deid.deidentifier import Deidentifier
    from dicom_deid.onnx_device import ModelSettingsError

    assert Deidentifier(device="cpu").runtime.resolved_keypoint_engine() == "onnx"
    chosen = Deidentifier(device="cpu", keypoint_engine="mediapipe").runtime
    assert chosen.resolved_keypoint_engine() == "mediapipe"
    with pytest.raises(ModelSettingsError):
        Deidentifier(device="cpu", keypoint_engine="tflite")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["deidentify", "x", "-o", "y", "--keypoint-engine", "mediapipe"])
    assert args.keypoint_engine == "mediapipe"
    with pytest.raises(SystemExit):
        parser.parse_args(["deidentify", "x", "-o", "y", "--keypoint-engine", "tflite"])


def test_tracked_frames_given_mediapipes_region_agree(frames) -> None:
    """Each frame from the region MediaPipe's own graph tracked to (its
    pose_rect_from_landmarks stream): the points and the next region, every step of a
    tracked frame but the models' float noise. Before the crop used MediaPipe's warp the
    worst frame was 0.74 % and the next region's side 2.2 px off."""
    from mediapipe.python.solution_base import SolutionBase

    from dicom_deid.faces import mp_geometry as geo

    reference = SolutionBase(
        binary_graph_path="mediapipe/modules/pose_landmark/pose_landmark_cpu.binarypb",
        side_inputs={"model_complexity": 1, "smooth_landmarks": False,
                     "enable_segmentation": False, "smooth_segmentation": False,
                     "use_prev_landmarks": True},
        outputs=["pose_landmarks", "pose_rect_from_landmarks"])
    onnx = OnnxPose(device="cpu", smooth=False)
    region, gaps, sides = None, [], []
    try:
        for rgb in frames:
            h, w = rgb.shape[:2]
            out = reference.process(rgb)
            a = _points(out, w, h)
            if region is not None:
                onnx._rect = region
            result = onnx.process(rgb)
            assert (a is None) == (result is None)
            theirs = out.pose_rect_from_landmarks
            region = None if theirs is None else geo.Rect(
                theirs.x_center, theirs.y_center, theirs.width, theirs.height, theirs.rotation)
            if a is None or region is None:
                continue
            gaps.append(_gap_pct(a, result.landmarks[:, :2] * [w, h]))
            sides.append(abs(onnx._rect.w - region.w) * w)
    finally:
        reference.close()
    assert len(gaps) >= 15
    assert max(gaps) < 0.05, gaps
    assert max(sides) < 0.1, sides
