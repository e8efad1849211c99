from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces.region import face_height
from dicom_deid.faces.tracker import TRACKED, FaceTracker
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
