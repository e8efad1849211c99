"""shrink: the fast area downscale used by the leak check, the tracker's crops and the
scene-cut thumbnails."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dicom_deid.faces.shrink import shrink
from tests.faces import synth


@pytest.mark.parametrize("size", [(416, 256), (64, 36), (300, 301), (511, 511), (700, 300)])
def test_shrink_matches_the_area_filter(size):
    img = np.ascontiguousarray(synth.astronaut())
    ours = shrink(img, size)
    ref = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref).mean() < 2.0


def test_shrink_anti_aliases_a_fine_pattern():
    stripes = np.zeros((720, 1280, 3), np.uint8)
    stripes[:, ::2] = 255                         # one-pixel stripes: mid grey once shrunk
    out = shrink(stripes, (416, 256))
    assert abs(float(out.mean()) - 127.5) < 3 and float(out.std()) < 10


def test_shrink_rejects_an_empty_target():
    with pytest.raises(ValueError, match="positive"):
        shrink(np.zeros((10, 10, 3), np.uint8), (0, 5))
