from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces.region import face_height
from dicom_deid.faces.tracker import TRACKED, FaceTracker, TrackerConfig
from tests.faces import synth


@pytest.mark.parametrize("motion", ["translate", "scale", "rotate"])
def test_one_stable_track_follows_the_moving_face(motion):
    frames, truth = synth.sequence(16, motion)
    tracker = FaceTracker(fps=25.0)
    try:
        for rgb, gt in zip(frames, truth, strict=True):
            faces = tracker.update(rgb)
            assert [f.status for f in faces] == [TRACKED]
            assert faces[0].track_id == 1
            lm = faces[0].landmarks
            assert lm.shape == (478, 3)
            # In the original frame's pixels: within a few percent of the face height.
            err = np.linalg.norm(lm[:, :2] - gt[:, :2], axis=1).mean()
            assert err < 0.06 * face_height(gt)
        # Detection ran on a schedule, not on every frame.
        assert tracker.detections_run < len(frames) / 2
        assert tracker.scene_cuts == 0
    finally:
        tracker.close()


def test_two_faces_get_two_ids_that_stay_with_them():
    size = (480, 240)
    left = synth.motion_matrices(1, "still", (240, 240))[0]
    right = left.copy()
    right[0, 2] += 240
    frames = []
    for i in range(8):
        a, b = left.copy(), right.copy()
        a[0, 2] += i * 2
        b[0, 2] -= i * 2
        fa = synth.frame(a, size)
        fb = synth.frame(b, size)
        frames.append(np.where(np.arange(size[0])[None, :, None] < 240, fa, fb).astype(np.uint8))
    tracker = FaceTracker(fps=25.0)
    try:
        ids = []
        for rgb in frames:
            faces = sorted(tracker.update(rgb), key=lambda f: f.bbox[0])
            assert [f.status for f in faces] == [TRACKED, TRACKED]
            ids.append(tuple(f.track_id for f in faces))
        assert len(set(ids)) == 1 and len(set(ids[0])) == 2
    finally:
        tracker.close()


def test_scene_cut_restarts_smoothing_and_reacquires():
    from skimage import data

    frames, truth = synth.sequence(6, "still")
    other = np.ascontiguousarray(data.coffee()[:320, :320])
    moved = synth.frame(synth.motion_matrices(1, "translate")[0], (320, 320))
    moved_truth = synth.warp_landmarks(synth.astronaut_landmarks(), synth.motion_matrices(1, "translate")[0])
    tracker = FaceTracker(fps=25.0)
    try:
        for rgb in frames:
            tracker.update(rgb)
        tracker.update(other)
        assert tracker.scene_cuts == 1
        faces = [f for f in tracker.update(moved) if f.status == TRACKED]
        assert tracker.scene_cuts == 2
        assert len(faces) == 1
        # No smoothing across the cut: the landmarks are where the face is in the new shot.
        err = np.linalg.norm(faces[0].landmarks[:, :2] - moved_truth[:, :2], axis=1).mean()
        assert err < 0.06 * face_height(moved_truth)
    finally:
        tracker.close()


class _NoModels:
    def close(self):
        pass


@pytest.mark.parametrize("x0", [0.3, 0.9, 10.95, 300.99])
def test_large_face_crop_near_a_fractional_edge_fits_the_crop(x0):
    """A big face (shrunk into the crop) whose region starts a fraction of a pixel past an
    integer used to round to crop row -1 and fail (found on a 720p clip)."""
    tracker = FaceTracker(_NoModels(), fps=25.0)
    rgb = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    side = 372.0  # crop scale 256/372 = 0.69: just under the area-filter switch
    crop, ox, oy, unit = tracker._crop(rgb, x0 + side / 2, x0 + side / 2, side)
    size = tracker.config.crop_size
    assert crop.shape == (size, size, 3)
    # The mapping back to frame pixels lands where the region starts.
    assert abs(ox - x0) <= 2 * unit and abs(oy - x0) <= 2 * unit


def test_landmark_array_reads_the_serialised_list_as_the_proto_walk_does():
    """The fast path (x, y, z only) and the fallback (any other field set) give the same
    numbers as walking the protobuf objects, including on a real face-mesh answer."""
    import mediapipe as mp
    from mediapipe.framework.formats import landmark_pb2

    from dicom_deid.faces.models import landmark_array

    def walk(lst):
        return np.array([(p.x, p.y, p.z) for p in lst.landmark], dtype=np.float64)

    rng = np.random.default_rng(0)
    plain = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in rng.normal(size=(478, 3)):
        plain.landmark.add(x=x, y=y, z=z)
    assert np.array_equal(landmark_array(plain), walk(plain))
    with_visibility = landmark_pb2.NormalizedLandmarkList()
    with_visibility.CopyFrom(plain)
    with_visibility.landmark[7].visibility = 0.5
    assert np.array_equal(landmark_array(with_visibility), walk(plain))
    assert landmark_array(landmark_pb2.NormalizedLandmarkList()).shape == (0, 3)

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        result = mesh.process(np.ascontiguousarray(synth.astronaut()))
    face = result.multi_face_landmarks[0]
    assert landmark_array(face).shape == (478, 3)
    assert np.array_equal(landmark_array(face), walk(face))


def test_a_new_track_starts_settled():
    # The first landmarks of a track come from the detector's crop and MediaPipe's own
    # detector; the tracker meshes that frame again from landmark-placed crops (as it does
    # every later frame), so the step from the first frame to the second is no larger than
    # the steps after it. Without that (prime_passes=0) it was twice their size on this still
    # sequence, and the swap flickered in the first frames of every GRID clip.
    frames, truth = synth.sequence(6, "still")
    tracker = FaceTracker(fps=25.0, config=TrackerConfig(smoothing=False))
    try:
        raws = [tracker.update(rgb)[0].raw_landmarks.copy() for rgb in frames]
    finally:
        tracker.close()
    steps = [float(np.linalg.norm(b[:, :2] - a[:, :2], axis=1).mean())
             for a, b in zip(raws, raws[1:], strict=False)]
    assert steps[0] < 1.3 * float(np.median(steps[1:]))
    assert steps[0] < 0.01 * face_height(truth[0])
