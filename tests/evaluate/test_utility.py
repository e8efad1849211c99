"""Known answers for the landmark, aspect-ratio, jitter and keypoint measures."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.evaluate.utility import (
    DLIB68_OUTER_EYES,
    MEDIAPIPE_OUTER_EYES,
    eye_aspect_ratio,
    interocular,
    jitter,
    keypoint_displacement,
    mouth_aspect_ratio,
    nme,
)
from dicom_deid.evaluate.video_metrics import blink_threshold, count_blinks, pearson


def _mesh(iod: float = 100.0, points: int = 478, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, 200, size=(points, 3))
    a, b = MEDIAPIPE_OUTER_EYES if points == 478 else DLIB68_OUTER_EYES
    pts[a, :2] = (50.0, 80.0)
    pts[b, :2] = (50.0 + iod, 80.0)
    return pts


def test_identical_landmarks_have_zero_nme():
    pts = _mesh()
    assert nme(pts, pts.copy(), "mediapipe") == 0.0


def test_nme_is_shift_over_interocular_in_percent():
    ref = _mesh(iod=80.0)
    moved = ref.copy()
    moved[:, 0] += 3.0
    moved[:, 1] += 4.0          # 5 px everywhere; z is ignored
    moved[:, 2] += 100.0
    assert interocular(ref, "mediapipe") == pytest.approx(80.0)
    assert nme(ref, moved, "mediapipe") == pytest.approx(5.0 / 80.0 * 100.0)
    dl = _mesh(iod=50.0, points=68)
    assert nme(dl, dl + [2.0, 0.0, 0.0], "dlib68") == pytest.approx(4.0)


def test_nme_rejects_mismatched_sets():
    with pytest.raises(ValueError, match="landmark counts"):
        nme(_mesh(), _mesh(points=68), "mediapipe")


def _eye_points(width: float, height: float) -> np.ndarray:
    pts = np.zeros((68, 2))
    for p1, p2, p3, p4, p5, p6 in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
        pts[p1], pts[p4] = (0, 0), (width, 0)
        pts[p2], pts[p3] = (width / 3, -height / 2), (2 * width / 3, -height / 2)
        pts[p6], pts[p5] = (width / 3, height / 2), (2 * width / 3, height / 2)
    pts[60], pts[64] = (0, 50), (40, 50)
    for a, b in ((61, 67), (62, 66), (63, 65)):
        pts[a], pts[b] = (10, 45), (10, 55)
    return pts


def test_eye_and_mouth_aspect_ratio():
    assert eye_aspect_ratio(_eye_points(30.0, 9.0), "dlib68") == pytest.approx(0.3)
    assert eye_aspect_ratio(_eye_points(30.0, 0.0), "dlib68") == pytest.approx(0.0)
    assert mouth_aspect_ratio(_eye_points(30.0, 9.0), "dlib68") == pytest.approx(10.0 / 40.0)


def test_identical_frames_have_zero_jitter():
    pts = _mesh()
    assert jitter([pts] * 6, "mediapipe") == 0.0


def test_jitter_is_second_difference_and_ignores_linear_motion():
    pts = _mesh(iod=100.0)
    linear = [pts + [2.0 * t, 0.0, 0.0] for t in range(6)]
    assert jitter(linear, "mediapipe") == pytest.approx(0.0, abs=1e-9)
    shaky = [pts + [(1.0 if t % 2 else 0.0), 0.0, 0.0] for t in range(6)]
    # |x[t-1] - 2x[t] + x[t+1]| = 2 px at every inner frame: 2% of a 100 px inter-ocular.
    assert jitter(shaky, "mediapipe") == pytest.approx(2.0)
    assert jitter([pts, None, pts, pts], "mediapipe") is None


def test_keypoint_displacement_and_pck():
    ref = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [np.nan, np.nan]])
    moved = ref + [[1.0, 0.0], [10.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    disp, pck = keypoint_displacement(ref, moved, diagonal=100.0)
    assert disp == pytest.approx(11.0 / 3)
    assert pck == pytest.approx(2 / 3)


def test_blinks_and_correlation():
    ear = [0.3] * 5 + [0.1, 0.1] + [0.3] * 5 + [0.05, 0.05, 0.05] + [0.3] * 3 + [0.1] + [0.3]
    threshold = blink_threshold(ear)
    assert threshold == pytest.approx(0.225)
    assert count_blinks(ear, threshold) == 2          # a single-frame dip is not a blink
    assert count_blinks([0.3, None, 0.1, 0.1], threshold) == 1
    r, mae, n = pearson(ear, [2 * v + 1 for v in ear])
    assert r == pytest.approx(1.0) and n == len(ear)
    r, _, _ = pearson(ear, [0.2] * len(ear))
    assert r is None


def test_faces_are_matched_by_overlap_not_order():
    from dicom_deid.evaluate.utility import match_faces, matched

    left = _mesh(iod=40.0, seed=1) * [0.3, 0.3, 1.0]              # a face near the origin
    right = left + [400.0, 0.0, 0.0]                              # another person, far right
    moved = left + [2.0, 1.0, 0.0]
    assert match_faces([left, right], [right + 1.0, moved]) == [(0, 1), (1, 0)]
    assert matched(left, [right]) is None                         # elsewhere: not the same face
    assert matched(left, [right, moved]) is moved
    assert matched(None, [moved]) is None


def test_body_keypoints_compare_the_same_person_only():
    from dicom_deid.evaluate.aggregate import _body_pairs
    from dicom_deid.evaluate.observer import FrameObs

    pose = np.column_stack([np.linspace(100, 200, 33), np.linspace(50, 450, 33)])
    same = FrameObs(0, pose=pose + [1.0, 0.0])
    other = FrameObs(0, pose=pose + [600.0, 0.0])
    body = {k: [] for k in ("face", "body", "hands", "frames", "other_person", "compared")}
    _body_pairs(FrameObs(0, pose=pose), same, body)
    _body_pairs(FrameObs(0, pose=pose), other, body)
    assert len(body["frames"]) == 2 and len(body["compared"]) == 1
    assert len(body["other_person"]) == 1
    diag = np.hypot(100, 400)
    assert body["body"][0] == pytest.approx((100.0 / diag, 1.0))
