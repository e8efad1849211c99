"""Invariance metrics: known answers."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from dicom_deid.keypoints import FrameKeypoints, face_nme, invariance
from tests.keypoints.conftest import synthetic_keypoints


def _face(iod: float = 50.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    face = rng.uniform(100, 200, (478, 3)).astype(np.float32)
    face[33, :2] = (100, 150)
    face[263, :2] = (100 + iod, 150)
    return face


def test_identical_keypoints_have_zero_error() -> None:
    kps = synthetic_keypoints(6)
    m = invariance(kps, copy.deepcopy(kps), fallback_frames=3, leak_frames=1)
    assert m.frames == 6
    assert m.face_nme_percent == 0.0 and m.face_nme_max_percent == 0.0
    assert m.face_retention_percent == 100.0
    assert m.face_frames_original == m.face_frames_both == 4
    assert m.body_displacement_px == 0.0 and m.body_displacement_percent == 0.0
    assert m.hand_displacement_px == 0.0
    assert (m.fallback_frames, m.leak_frames) == (3, 1)
    assert m.as_dict()["face_retention_percent"] == 100.0


def test_face_nme_is_percent_of_interocular_distance() -> None:
    face = _face(iod=50.0)
    moved = face.copy()
    moved[:, 0] += 2.0                  # every landmark 2 px to the right
    assert face_nme(face, moved) == pytest.approx(4.0)
    moved[:, 1] += 1.5                  # and 1.5 px down: 2.5 px in all
    assert face_nme(face, moved) == pytest.approx(5.0)
    degenerate = face.copy()
    degenerate[263] = degenerate[33]
    assert face_nme(degenerate, moved) is None


def test_face_retention_and_mean_over_frames() -> None:
    face = _face(iod=50.0)
    shifted = face.copy()
    shifted[:, 0] += 5.0                # 10 % of the inter-ocular distance
    original = [FrameKeypoints(320, 240, face=face) for _ in range(4)]
    deid = [FrameKeypoints(320, 240, face=face), FrameKeypoints(320, 240, face=shifted),
            FrameKeypoints(320, 240), FrameKeypoints(320, 240)]
    m = invariance(original, deid)
    assert m.face_frames_original == 4 and m.face_frames_both == 2
    assert m.face_retention_percent == 50.0
    assert m.face_nme_percent == pytest.approx(5.0)
    assert m.face_nme_max_percent == pytest.approx(10.0)
    assert m.body_displacement_px is None and m.pose_frames_original == 0


def test_body_displacement_counts_only_visible_points() -> None:
    pose = np.zeros((33, 3), np.float32)
    vis = np.zeros(33, np.float32)
    vis[:10] = 0.9
    moved = pose.copy()
    moved[:10, 0] += 3.0                # visible points move 3 px
    moved[10:, 1] += 400.0              # invisible ones jump: ignored
    o = FrameKeypoints(300, 400, pose=pose, pose_visibility=vis)
    d = FrameKeypoints(300, 400, pose=moved, pose_visibility=vis)
    m = invariance([o], [d])
    assert m.body_displacement_px == pytest.approx(3.0)
    assert m.body_displacement_percent == pytest.approx(3.0 / 500.0 * 100)


def test_hand_displacement() -> None:
    hand = np.zeros((21, 3), np.float32)
    o = FrameKeypoints(100, 100, left_hand=hand, right_hand=hand)
    d = FrameKeypoints(100, 100, left_hand=hand + np.float32([3, 4, 0]), right_hand=None)
    m = invariance([o], [d])
    assert m.hand_frames_both == 1 and m.hand_displacement_px == pytest.approx(5.0)


def test_mismatched_inputs_are_refused() -> None:
    kps = synthetic_keypoints(3)
    with pytest.raises(ValueError, match="3 original frames but 2"):
        invariance(kps, kps[:2])
    other = [FrameKeypoints(10, 10) for _ in range(3)]
    with pytest.raises(ValueError, match="frame 1: original is 640x480"):
        invariance(kps, other)


def test_frame_keypoints_validate_shapes() -> None:
    with pytest.raises(ValueError, match="face keypoints must be 478 x 3"):
        FrameKeypoints(10, 10, face=np.zeros((468, 3)))
    with pytest.raises(KeyError, match="unknown keypoint set"):
        FrameKeypoints(10, 10).get("feet")
    kp = FrameKeypoints(10, 10, left_hand=np.ones((21, 2)))
    assert kp.left_hand.shape == (21, 3) and kp.left_hand.dtype == np.float32
    assert kp.present() == ["left_hand"]
