from __future__ import annotations

import numpy as np

from dicom_deid.faces.scenecut import SceneCutDetector
from dicom_deid.faces.smoothing import OneEuroFilter
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


def test_scene_cut_fires_on_a_new_shot_not_on_motion():
    from skimage import data

    frames, _ = synth.sequence(6, "translate", (320, 240))
    det = SceneCutDetector()
    assert not any(det(f) for f in frames)
    other = np.ascontiguousarray(data.coffee()[:240, :320])
    assert det(other)
    assert not det(other)
