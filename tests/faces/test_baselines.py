from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces.baselines import BASELINES, apply_baseline
from dicom_deid.faces.region import BASELINE_FOREHEAD, BASELINE_MARGIN, covered_region, face_height
from tests.faces import recognizer, synth


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """dlib descriptor of the untouched astronaut."""
    lm = synth.astronaut_landmarks()
    return recognizer.descriptor_at(synth.astronaut(), tuple(lm[:, :2].mean(axis=0)))


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_rewrites_the_whole_region_and_nothing_else(method):
    img = synth.astronaut()
    lm = synth.astronaut_landmarks()
    mask = covered_region(lm, img.shape, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN)
    out = img.copy()
    apply_baseline(out, mask, method, face_height(lm))
    inside = mask > 0
    hull = synth.hull_mask(lm, img.shape)
    assert np.array_equal(out[~inside], img[~inside])
    unchanged = np.all(out[hull] == img[hull], axis=1).mean()
    if method == "blackout":
        assert np.all(out[inside] == 0)
    else:
        assert unchanged < 0.01
        # Strong, not cosmetic: little of the face's fine detail survives.
        detail_before = np.abs(np.diff(img.astype(float), axis=1))[hull[:, 1:]].mean()
        detail_after = np.abs(np.diff(out.astype(float), axis=1))[hull[:, 1:]].mean()
        assert detail_after < 0.3 * detail_before


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_recogniser_no_longer_matches(method, scale, reference):
    import cv2

    img = cv2.resize(synth.astronaut(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    lm = synth.astronaut_landmarks() * scale
    # dlib's HOG detector needs about 80 px faces: upsample the half-size photo.
    upsample = 1 if scale == 1.0 else 2
    assert recognizer.best_distance(img, reference, upsample) < recognizer.MATCH_DISTANCE
    mask = covered_region(lm, img.shape, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN)
    out = img.copy()
    apply_baseline(out, mask, method, face_height(lm))
    assert recognizer.best_distance(out, reference, upsample) >= recognizer.MATCH_DISTANCE


def test_unknown_method_and_empty_mask():
    img = synth.astronaut().copy()
    with pytest.raises(ValueError, match="unknown baseline"):
        apply_baseline(img, np.zeros(img.shape[:2], np.uint8), "smudge", 50.0)
    before = img.copy()
    apply_baseline(img, np.zeros(img.shape[:2], np.uint8), "blur", 50.0)
    assert np.array_equal(img, before)
