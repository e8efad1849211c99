from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces.region import (
    BASELINE_FOREHEAD,
    BASELINE_MARGIN,
    CHIN,
    FOREHEAD_TOP,
    covered_region,
    face_height,
    region_polygon,
)
from tests.faces import synth


def test_hull_contains_every_landmark_and_is_binary():
    lm = synth.astronaut_landmarks()
    mask = covered_region(lm, (512, 512, 3))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    xs, ys = np.round(lm[:, 0]).astype(int), np.round(lm[:, 1]).astype(int)
    assert np.all(mask[ys, xs] == 255)
    # The hull is the face, not the frame: well under a tenth of the astronaut photo.
    assert 0.01 < np.count_nonzero(mask) / mask.size < 0.1


def test_forehead_extends_along_the_faces_own_up_axis():
    lm = synth.astronaut_landmarks()
    h = face_height(lm)
    plain = region_polygon(lm)
    grown = region_polygon(lm, forehead=BASELINE_FOREHEAD)
    # Upright face: the region reaches higher (smaller y), the chin stays where it was.
    assert grown[:, 1].min() < plain[:, 1].min() - 0.2 * h
    assert grown[:, 1].max() == pytest.approx(plain[:, 1].max(), abs=1.0)

    # Rolled 90 degrees (forehead pointing to +x): the extension follows the head.
    rolled = lm.copy()
    centre = lm[:, :2].mean(axis=0)
    rel = lm[:, :2] - centre
    rolled[:, 0] = centre[0] - rel[:, 1]
    rolled[:, 1] = centre[1] + rel[:, 0]
    assert rolled[FOREHEAD_TOP, 0] > rolled[CHIN, 0]
    plain_r = region_polygon(rolled)
    grown_r = region_polygon(rolled, forehead=BASELINE_FOREHEAD)
    assert grown_r[:, 0].max() > plain_r[:, 0].max() + 0.2 * h
    assert grown_r[:, 1].min() == pytest.approx(plain_r[:, 1].min(), abs=1.0)


def test_margin_grows_the_region_on_every_side():
    lm = synth.astronaut_landmarks()
    small = covered_region(lm, (512, 512))
    big = covered_region(lm, (512, 512), forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN)
    assert np.all(big[small > 0] == 255)
    ys, xs = np.nonzero(small)
    ys2, xs2 = np.nonzero(big)
    margin = BASELINE_MARGIN * face_height(lm)
    assert xs2.min() <= xs.min() - 0.8 * margin and xs2.max() >= xs.max() + 0.8 * margin
    assert ys2.max() >= ys.max() + 0.8 * margin


def test_region_clips_to_the_frame_and_rejects_bad_landmarks():
    lm = synth.astronaut_landmarks().copy()
    lm[:, 0] += 290  # about half the face off the right edge of a 512 px frame
    mask = covered_region(lm, (512, 512))
    assert mask.shape == (512, 512) and mask[:, -1].any()
    bad = lm.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        covered_region(bad, (512, 512))
    with pytest.raises(ValueError, match="shape"):
        covered_region(np.zeros((478,)), (512, 512))
