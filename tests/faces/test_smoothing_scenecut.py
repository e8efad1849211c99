from __future__ import annotations

import numpy as np

from dicom_deid.faces import mesh
from dicom_deid.faces.scenecut import SceneCutDetector
from dicom_deid.faces.smoothing import LandmarkSmoother, OneEuroFilter
from tests.faces import synth


def test_one_euro_removes_jitter_on_a_still_face():
    rng = np.random.default_rng(0)
    truth = np.full((478, 3), 100.0)
    f = OneEuroFilter()
    raw_err, smooth_err = [], []
    for i in range(50):
        noisy = truth + rng.normal(0, 1.0, truth.shape)
        out = f(noisy, i / 25.0, scale=100.0)
        if i >= 10:
            raw_err.append(np.abs(noisy - truth).mean())
            smooth_err.append(np.abs(out - truth).mean())
    assert np.mean(smooth_err) < 0.5 * np.mean(raw_err)


def test_one_euro_follows_fast_motion_closely():
    f = OneEuroFilter()
    lag = 0.0
    for i in range(50):
        x = np.full((4, 2), 10.0 * i)  # 250 px/s on a 100 px face
        lag = float(np.abs(f(x, i / 25.0, scale=100.0) - x).max())
    # A fixed low-pass at the still-face cut-off would lag by about a second's worth.
    assert lag < 10.0


def test_landmark_smoother_follows_a_blink_and_steadies_the_face():
    """Eyelids close in two frames; the filter that steadies the face must not hold them open
    (the rendered eye then never closes), nor may it let the rest of the face shimmer."""
    rng = np.random.default_rng(1)
    truth = synth.astronaut_landmarks().astype(np.float64)
    closed = synth.eyes_open_to(truth, 0.0)
    scale = float(np.ptp(truth[:, 1]))
    lids = LandmarkSmoother()
    plain = OneEuroFilter()
    others = np.setdiff1d(np.arange(478), list(mesh.RIGHT_EYE) + list(mesh.LEFT_EYE)
                          + list(mesh.RIGHT_IRIS) + list(mesh.LEFT_IRIS)
                          + list(mesh.INNER_LIPS))
    raw_err, smooth_err = [], []
    for i in range(30):
        noisy = truth + rng.normal(0, 0.7, truth.shape)
        out = lids(noisy, i / 25.0, scale)
        plain(noisy, i / 25.0, scale)
        if i >= 10:
            raw_err.append(np.abs(noisy[others] - truth[others]).mean())
            smooth_err.append(np.abs(out[others] - truth[others]).mean())
    assert np.mean(smooth_err) < 0.6 * np.mean(raw_err)
    open_ear = mesh.eye_aspect_ratio(truth)
    # The blink: closed for two frames.
    for i in (30, 31):
        out = lids(closed, i / 25.0, scale)
        slow = plain(closed, i / 25.0, scale)
    assert mesh.eye_aspect_ratio(out) < 0.25 * open_ear
    assert mesh.eye_aspect_ratio(slow) > 0.25 * open_ear  # what a single filter does
    # Eyes still in place: the lids close about where they were, not dragged off.
    eyes = list(mesh.RIGHT_EYE) + list(mesh.LEFT_EYE)
    assert np.abs(out[eyes, :2] - closed[eyes, :2]).max() < 0.03 * scale


def test_scene_cut_fires_on_a_new_shot_not_on_motion():
    from skimage import data

    frames, _ = synth.sequence(6, "translate", (320, 240))
    det = SceneCutDetector()
    assert not any(det(f) for f in frames)
    other = np.ascontiguousarray(data.coffee()[:240, :320])
    assert det(other)
    assert not det(other)
