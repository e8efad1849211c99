"""swap.BROW_KEEP (`swap.keep_brow_height`): the rendered brows take the patient's brow height
above the eyes (in IODs) by the given share; the eyes and irises stay where they are."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import mesh, swap
from dicom_deid.faces.swap import SwapRenderer
from tests.faces import synth


def _heights(points: np.ndarray) -> np.ndarray:
    a, b = (points[i, :2].astype(np.float64) for i in mesh.OUTER_EYE_CORNERS)
    iod = float(np.hypot(*(b - a)))
    up = np.array([(b - a)[1], -(b - a)[0]]) / iod
    return np.array([np.dot(points[list(brow), :2].mean(0) - points[list(eye), :2].mean(0), up)
                     for brow, eye in zip(swap._BROWS, (mesh.RIGHT_EYE, mesh.LEFT_EYE),
                                          strict=True)]) / iod


@pytest.fixture(scope="module")
def faces():
    lm = synth.astronaut_landmarks().astype(np.float32)
    renderer = SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)
    donor = renderer.geometry(lm)
    # A patient with brows raised by 0.05 IOD (both), the donor's geometry as rendered.
    raised = lm.copy()
    a, b = (lm[i, :2] for i in mesh.OUTER_EYE_CORNERS)
    iod = float(np.hypot(*(b - a)))
    for brow in swap._BROWS:
        raised[list(brow), 1] -= 0.05 * iod
    return raised, donor, renderer.model.canonical


def test_keep_one_gives_the_patients_brow_height(faces):
    patient, donor, canonical = faces
    out = donor.copy()
    swap.keep_brow_height(out, patient, canonical, 1.0)
    assert np.allclose(_heights(out), _heights(patient), atol=1e-3)
    assert not np.allclose(_heights(donor), _heights(patient), atol=1e-2)
    fixed = list(mesh.RIGHT_EYE) + list(mesh.LEFT_EYE) + list(mesh.RIGHT_IRIS) \
        + list(mesh.LEFT_IRIS) + [1, 4, 13, 14, 152]  # eyes, irises, nose, lips, chin
    assert np.allclose(out[fixed], donor[fixed], atol=1e-3)


def test_keep_half_moves_half_way(faces):
    patient, donor, canonical = faces
    out = donor.copy()
    swap.keep_brow_height(out, patient, canonical, 0.5)
    want = (_heights(donor) + _heights(patient)) / 2.0
    assert np.allclose(_heights(out), want, atol=1e-3)


def test_brow_keep_is_off_by_default_and_bounded(monkeypatch):
    lm = synth.astronaut_landmarks().astype(np.float32)
    assert swap.BROW_KEEP == 0.0
    plain = SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)
    monkeypatch.setattr(swap, "BROW_KEEP", 1.0)
    kept = SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)
    assert not np.allclose(plain.geometry(lm)[list(swap._BROWS[0])],
                           kept.geometry(lm)[list(swap._BROWS[0])])
    monkeypatch.setattr(swap, "BROW_KEEP", 1.5)
    with pytest.raises(ValueError, match="BROW_KEEP"):
        SwapRenderer(donor_seed=3, shape=1.0, donor_candidates=1)
