"""KeypointExtractor on a real face (skimage's astronaut, public domain), with MediaPipe."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from dicom_deid.keypoints import KeypointExtractor, extractor
from dicom_deid.keypoints.points import FACE_EYE_OUTER, HAND_NAMES, POSE_NAMES, FrameKeypoints

CANVAS = (720, 960)
OFFSET = (100, 200)   # row, column of the astronaut on the canvas


def _scene() -> np.ndarray:
    """The astronaut (a head and shoulders shot) pasted on a larger grey frame."""
    canvas = np.full((*CANVAS, 3), 90, np.uint8)
    face = data.astronaut()
    r, c = OFFSET
    canvas[r:r + face.shape[0], c:c + face.shape[1]] = face
    return canvas


@pytest.fixture(scope="module")
def measured() -> tuple[list[FrameKeypoints], list[FrameKeypoints]]:
    """Three frames of the scene, then three blank frames, through one extractor."""
    scene = _scene()
    blank = np.full_like(scene, 90)
    with KeypointExtractor(face=True, fps=25.0) as ex:
        seen = [ex.extract(scene) for _ in range(3)]
        empty = [ex.extract(blank) for _ in range(3)]
    return seen, empty


def test_point_orders_match_mediapipe() -> None:
    from mediapipe.python.solutions.hands import HandLandmark
    from mediapipe.python.solutions.pose import PoseLandmark

    assert tuple(p.name.lower() for p in sorted(PoseLandmark, key=int)) == POSE_NAMES
    assert tuple(p.name.lower() for p in sorted(HandLandmark, key=int)) == HAND_NAMES


def test_face_and_pose_on_the_astronaut(measured) -> None:
    seen, _ = measured
    for kp in seen:
        assert (kp.width, kp.height) == (CANVAS[1], CANVAS[0])
        assert kp.face is not None and kp.face.shape == (478, 3) and kp.face.dtype == np.float32
        assert kp.pose is not None and kp.pose.shape == (33, 3)
        assert kp.pose_visibility is not None and kp.pose_visibility[0] > 0.9
    kp = seen[-1]
    r, c = OFFSET
    # The face lies within the pasted picture, around where the astronaut's face is
    # (columns 150-300, rows 50-220 of the 512 x 512 picture).
    x0, y0 = kp.face[:, :2].min(axis=0) - (c, r)
    x1, y1 = kp.face[:, :2].max(axis=0) - (c, r)
    assert 120 < x0 < x1 < 330 and 20 < y0 < y1 < 250
    iod = np.linalg.norm(kp.face[FACE_EYE_OUTER[0], :2] - kp.face[FACE_EYE_OUTER[1], :2])
    assert 40 < iod < 90
    # Two independent models agree: the pose's nose is at the face mesh's nose tip (1).
    assert np.linalg.norm(kp.pose[0, :2] - kp.face[1, :2]) < 0.25 * iod
    # The subject's left eye is on the right of the picture (the subject faces the camera).
    assert kp.pose[POSE_NAMES.index("left_eye"), 0] > kp.pose[POSE_NAMES.index("right_eye"), 0]


def test_nothing_is_found_in_blank_frames(measured) -> None:
    _, empty = measured
    # The face tracker holds a lost face for a moment (it covers it); keypoints never
    # report a face without landmarks, and pose and hands go at once.
    for kp in empty:
        assert kp.face is None and kp.left_hand is None and kp.right_hand is None
    assert empty[-1].pose is None


def test_face_landmarks_given_by_the_caller_are_used() -> None:
    scene = _scene()
    small = np.zeros((478, 3)) + [10, 10, 0]
    small[:5, :2] = [[0, 0], [20, 0], [0, 20], [20, 20], [5, 5]]
    large = small * [4, 4, 1]
    with KeypointExtractor(face=True, pose=False, hands=False) as ex:
        kp = ex.extract(scene, face_landmarks=[small, large])
        assert np.array_equal(kp.face, large.astype(np.float32)), "the largest face is kept"
        assert ex.extract(scene, face_landmarks=small).face.shape == (478, 3)
        assert ex.extract(scene, face_landmarks=[]).face is None
        assert ex._tracker is None, "the face was not measured a second time"
        with pytest.raises(ValueError, match="478 x 3"):
            ex.extract(scene, face_landmarks=[np.zeros((468, 3))])
        with pytest.raises(ValueError, match="uint8 RGB"):
            ex.extract(scene[..., 0])
    with pytest.raises(RuntimeError, match="closed"):
        ex.extract(scene)


def test_face_false_skips_the_face() -> None:
    with KeypointExtractor(face=False, pose=False, hands=False) as ex:
        kp = ex.extract(_scene(), face_landmarks=np.zeros((478, 3)))
    assert kp.present() == []


def test_hands_are_told_apart_by_the_pose_wrists() -> None:
    pose = np.zeros((33, 3), np.float32)
    pose[15, :2] = (300, 200)      # subject's left wrist: on the right of the picture
    pose[16, :2] = (100, 200)
    vis = np.ones(33, np.float32)
    kp = FrameKeypoints(400, 400, pose=pose, pose_visibility=vis)
    near_left = np.zeros((21, 3), np.float32) + [310, 210, 0]
    near_right = np.zeros((21, 3), np.float32) + [90, 190, 0]
    sides = extractor.KeypointExtractor._sides
    left, right = sides(None, [near_right, near_left], ["Left", "Left"], kp)
    assert left is near_left and right is near_right
    left, right = sides(None, [near_right], ["Right"], kp)
    assert left is None and right is near_right
    # Without a pose, MediaPipe's mirrored label decides: "Left" is the subject's right hand.
    bare = FrameKeypoints(400, 400)
    left, right = sides(None, [near_left, near_right], ["Left", "Right"], bare)
    assert right is near_left and left is near_right
    left, right = sides(None, [near_left, near_right], ["Left", "Left"], bare)
    assert right is near_left and left is near_right


# COCO's 17 keypoints as MediaPipe pose indices (nose, eyes, ears, shoulders, elbows, wrists,
# hips, knees, ankles; left before right, as the subject sees it in both).
COCO_TO_POSE = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


def test_pose_agrees_with_coco_annotation() -> None:
    """A real full-body photo (../shared/data, COCO val2017 785) against its human annotation:
    pixel coordinates and left/right are right (a swap would move the shoulders ~45 px)."""
    import json

    import cv2

    from tests.helpers import shared_data

    image = shared_data("pose", "coco_000000000785.jpg")
    annotation = json.loads(shared_data("pose", "coco_000000000785_keypoints.json").read_text())
    (person,) = annotation["annotations"]
    truth = np.array(person["keypoints"], dtype=np.float64).reshape(-1, 3)
    height = person["bbox"][3]
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    with KeypointExtractor(face=False, hands=False) as ex:
        kp = ex.extract(rgb)
    assert kp.pose is not None
    seen = truth[:, 2] > 0
    error = np.linalg.norm(kp.pose[COCO_TO_POSE][seen, :2] - truth[seen, :2], axis=1)
    assert error.max() < 0.1 * height, error.round(1)
    assert error.mean() < 0.04 * height, error.round(1)


def test_like_skips_sets_the_original_lacks() -> None:
    scene = _scene()
    with KeypointExtractor(face=True, hands=False) as ex:
        bare = ex.extract(scene, like=FrameKeypoints(CANVAS[1], CANVAS[0]))
        assert bare.pose is None, "the original had no pose: not looked for"
        assert bare.face is not None, "the face is always followed"
        with_pose = FrameKeypoints(CANVAS[1], CANVAS[0], pose=np.zeros((33, 3)))
        assert ex.extract(scene, like=with_pose).pose is not None


def test_concurrent_extractor_gives_the_sequential_keypoints() -> None:
    """Pose, hands and the face run at once (concurrent=True, the default) and give exactly
    the keypoints of one after another, frame after frame while tracking (the people clip:
    Tears of Steel, (c) Blender Foundation, CC BY 3.0; frames 16-59 hold a pose, a face and
    hands)."""
    import av

    from tests.helpers import shared_data

    path = shared_data("video", "people", "tears_of_steel_clip01_640x360.mp4")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in
                  zip(range(60), container.decode(video=0), strict=False) if i >= 16]
    with KeypointExtractor(face=True, concurrent=False) as one, \
            KeypointExtractor(face=True) as many:
        assert one._pool is None and many._pool is not None
        seen = set()
        for rgb in frames:
            a, b = one.extract(rgb), many.extract(rgb)
            for name in ("face", "pose", "pose_visibility", "left_hand", "right_hand"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None) == (y is None), name
                if x is not None:
                    np.testing.assert_array_equal(x, y)
                    seen.add(name)
        # The de-identified frame's pass: only what the original holds is looked for.
        rgb = frames[-1]
        c = many.extract(rgb, like=FrameKeypoints(rgb.shape[1], rgb.shape[0]))
        assert c.pose is None and c.left_hand is None and c.right_hand is None
        assert c.face is not None
    assert seen >= {"face", "pose", "left_hand"} or seen >= {"face", "pose", "right_hand"}
    with pytest.raises(RuntimeError):
        many.extract(frames[0])
