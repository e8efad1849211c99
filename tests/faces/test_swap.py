"""SwapRenderer on skimage's astronaut: the face is replaced by a synthetic donor, the landmarks
stay where they were, donors follow the seed, and the renderer works inside FaceReplacer."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import FaceReplacer, mesh, swap
from dicom_deid.faces.donors import load_model
from dicom_deid.faces.swap import SwapRenderer, blend_toward_mean
from tests.faces import recognizer, synth


def _nme(reference: np.ndarray, other: np.ndarray, points: np.ndarray | None = None) -> float:
    """Mean landmark error in percent of the inter-ocular distance (outer eye corners)."""
    sel = slice(None) if points is None else points
    err = np.linalg.norm(reference[sel, :2] - other[sel, :2], axis=1).mean()
    return float(100.0 * err / mesh.inter_ocular(reference))


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(synth.astronaut()), synth.astronaut_landmarks().astype(np.float32)


@pytest.fixture(scope="module")
def swapped(astronaut):
    img, lm = astronaut
    return {seed: SwapRenderer(donor_seed=seed).render(img, lm) for seed in (1, 2)}


def test_swap_replaces_the_whole_hull_and_leaves_the_input_alone(astronaut, swapped):
    img, lm = astronaut
    before = img.copy()
    out = swapped[1]
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before)
    hull = synth.hull_mask(lm, img.shape)
    unchanged = np.all(out[hull] == img[hull], axis=1).mean()
    assert unchanged < 0.02
    # Far from the face nothing moves (the feathered edge is a fraction of the eye distance).
    assert np.array_equal(out[400:], img[400:])
    # The change inside the hull is substantial, not a slight tint.
    diff = np.abs(out[hull].astype(int) - img[hull].astype(int)).mean()
    assert diff > 12


def test_recogniser_no_longer_matches_the_swapped_astronaut(astronaut, swapped):
    img, lm = astronaut
    centre = tuple(lm[:, :2].mean(axis=0))
    reference = recognizer.descriptor_at(img, centre)
    for out in swapped.values():
        # Still a face to dlib (utility), but not the astronaut's (privacy).
        swapped_desc = recognizer.descriptor_at(out, centre)
        assert np.linalg.norm(swapped_desc - reference) >= recognizer.MATCH_DISTANCE


def test_swap_keeps_the_landmarks_at_shape_zero_and_moves_them_at_shape_one(astronaut, swapped,
                                                                           monkeypatch):
    img, lm = astronaut
    # Placed on the rigid points the geometry is far enough from the patient's for the reading to
    # tell the two apart; placed over the whole face (swap.POSE_FIT "all", the default) it comes
    # within 2.4 % of both on this photo (tests/faces/test_pose_fit.py).
    monkeypatch.setattr(swap, "POSE_FIT", "rigid")
    measured = mesh.landmarks_from_image(swapped[1])
    assert measured is not None, "MediaPipe must still find the swapped face"
    # The detector's own noise floor on this photo is about 0.4 % (JPEG re-encode).
    kept = _nme(lm, measured)
    assert kept < 3.0
    renderer = SwapRenderer(donor_seed=1, shape=1.0)
    mean_shape = mesh.landmarks_from_image(renderer.render(img, lm))
    assert mean_shape is not None
    # At shape 1 the face is drawn on another geometry, and MediaPipe reads that geometry
    # rather than the patient's: farther from the patient's landmarks than at shape 0, and
    # nearer the rendered geometry than the patient's (1.8 vs 2.5 % of the IOD; with the donor
    # texture's rim and forehead left uncleaned 2.2 vs 2.9 %).
    geometry = renderer.geometry(lm)
    assert _nme(lm, geometry) > 2.0
    assert _nme(lm, mean_shape) > kept + 0.4
    assert _nme(geometry, mean_shape) < _nme(lm, mean_shape) - 0.4


def test_shape_blends_the_geometry_toward_the_mean_shape(astronaut):
    _, lm = astronaut
    canonical = load_model().canonical
    assert np.array_equal(blend_toward_mean(lm, canonical, 0.0), lm)
    half = blend_toward_mean(lm, canonical, 0.5)
    full = blend_toward_mean(lm, canonical, 1.0)
    # The eyelid and inner-lip contours keep the patient's opening (next test); the rest blends.
    shape_pts = np.setdiff1d(np.arange(mesh.MESH_POINTS), _aperture_points())
    d_half = _nme(lm, half, shape_pts)
    d_full = _nme(lm, full, shape_pts)
    assert 0 < d_half < d_full
    assert d_half == pytest.approx(d_full / 2, rel=0.05)
    # At shape 1 the face is the mean shape up to a similarity: nothing of the patient's own
    # proportions is left.
    fit = mesh.fit_similarity(canonical[shape_pts], full[shape_pts])
    residual = np.linalg.norm(fit.apply(canonical[shape_pts]) - full[shape_pts], axis=1).mean()
    assert residual / mesh.inter_ocular(full) < 1e-3


def _aperture_points() -> np.ndarray:
    return np.array(sorted({i for upper, lower in mesh.APERTURES for i in upper[1:-1] + lower[1:-1]}))


def _opening(points: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]) -> float:
    """Gap between the lower and the upper contour across the corner line, over its length."""
    a, b = points[upper[0], :2], points[upper[-1], :2]
    along = (b - a) / np.linalg.norm(b - a)
    across = np.array([-along[1], along[0]])
    side = (points[list(lower[1:-1]), :2] - a) @ across - (points[list(upper[1:-1]), :2] - a) @ across
    return float(abs(side.mean()) / np.linalg.norm(b - a))


@pytest.mark.parametrize("shape", [0.7, 1.0])
def test_shape_keeps_the_patients_blinks_and_mouth_opening(astronaut, shape):
    _, lm = astronaut
    canonical = load_model().canonical
    closed = lm.copy()
    (right_upper, right_lower), _, (lips_upper, lips_lower) = mesh.APERTURES
    # Close the right eye (both lids meet on their midline) and open the mouth wide.
    upper, lower = list(right_upper[1:-1]), list(right_lower[1:-1])
    middle = (closed[upper, :2] + closed[lower, :2]) / 2
    closed[upper, :2] = middle
    closed[lower, :2] = middle
    gap = 0.3 * np.linalg.norm(lm[lips_upper[-1], :2] - lm[lips_upper[0], :2])
    closed[list(lips_lower[1:-1]), 1] += gap
    out = blend_toward_mean(closed, canonical, shape)
    assert _opening(out, right_upper, right_lower) < 0.02
    assert _opening(blend_toward_mean(lm, canonical, shape), right_upper, right_lower) > 0.15
    assert _opening(out, lips_upper, lips_lower) == pytest.approx(
        _opening(closed, lips_upper, lips_lower), abs=0.02)
    # The rest of the face still moved toward the mean shape, as far as without the apertures.
    rest = np.setdiff1d(np.arange(mesh.MESH_POINTS), _aperture_points())
    plain = (1 - shape) * lm + shape * mesh.fit_similarity(
        canonical[:mesh.MESH_POINTS], lm[:mesh.MESH_POINTS]).apply(canonical)
    assert _nme(closed, out, rest) == pytest.approx(_nme(lm, plain, rest), rel=0.02)
    assert _nme(closed, out, rest) > 1.0


def test_donor_seed_chooses_the_face(astronaut, swapped):
    img, lm = astronaut
    again = SwapRenderer(donor_seed=1).render(img, lm)
    assert np.array_equal(again, swapped[1])
    hull = synth.hull_mask(lm, img.shape)
    diff = np.abs(swapped[1][hull].astype(int) - swapped[2][hull].astype(int)).mean()
    assert diff > 4
    model = load_model()
    a, b = model.sample(1).texture, model.sample(2).texture
    assert np.abs(a - b)[model.layout.face_mask].mean() > 5
    # The recogniser tells two donors apart as well as it tells people apart.
    centre = tuple(lm[:, :2].mean(axis=0))
    d1 = recognizer.descriptor_at(swapped[1], centre)
    d2 = recognizer.descriptor_at(swapped[2], centre)
    assert np.linalg.norm(d1 - d2) > 0.3


def test_the_eyes_follow_the_patients_iris(astronaut):
    img, lm = astronaut
    renderer = SwapRenderer(donor_seed=3)
    iod = mesh.inter_ocular(lm)
    moved = lm.copy()
    shift = np.array([0.06 * iod, 0.0, 0.0], np.float32)
    for iris in (mesh.RIGHT_IRIS, mesh.LEFT_IRIS):
        moved[list(iris)] += shift
    a = renderer.render(img, lm).astype(int)
    b = renderer.render(img, moved).astype(int)
    changed = np.any(np.abs(a - b) > 30, axis=2)
    ys, xs = np.nonzero(changed)
    assert len(ys) > 20
    eyes = lm[list(mesh.RIGHT_EYE) + list(mesh.LEFT_EYE), :2]
    lo, hi = eyes.min(axis=0) - 3, eyes.max(axis=0) + 3
    inside = (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])
    assert inside.mean() > 0.95, "only the eyes may change when only the gaze moves"


def test_bad_inputs_are_clear_errors(astronaut):
    img, lm = astronaut
    renderer = SwapRenderer(donor_seed=0)
    with pytest.raises(ValueError, match="478"):
        renderer.render(img, lm[:468])
    with pytest.raises(ValueError, match="NaN"):
        bad = lm.copy()
        bad[5, 0] = np.nan
        renderer.render(img, bad)
    with pytest.raises(ValueError, match="uint8"):
        renderer.render(img.astype(np.float32), lm)
    with pytest.raises(ValueError, match="shape"):
        SwapRenderer(shape=1.5)


def test_a_face_half_outside_the_frame_is_rendered_without_error(astronaut):
    img, lm = astronaut
    crop = np.ascontiguousarray(img[:, 200:])
    shifted = lm.copy()
    shifted[:, 0] -= 200
    out = SwapRenderer(donor_seed=4).render(crop, shifted)
    hull = synth.hull_mask(shifted, crop.shape)
    assert np.all(out[hull] == crop[hull], axis=1).mean() < 0.02


def test_swap_through_the_replacer_on_a_moving_sequence():
    frames, truth = synth.sequence(10, "rotate")
    with FaceReplacer("swap", donor_seed=5, fps=25.0) as rep:
        outs = []
        for rgb, gt in zip(frames, truth, strict=True):
            out = rep.process(rgb)
            outs.append(out)
            hull = synth.hull_mask(gt, rgb.shape)
            assert np.all(out[hull] == rgb[hull], axis=1).mean() < 0.02
            assert len(rep.last.faces) == 1
            assert not rep.last.leak
        report = rep.close()
    assert report.renderer_failures == 0 and report.leaks == 0
    # The tracker's landmarks feed the renderer, so the swapped face is rendered rather than
    # covered by the fallback in (almost) every frame.
    assert report.fallback_frames <= 1
    reference = recognizer.descriptor_at(frames[5], tuple(truth[5][:, :2].mean(axis=0)))
    assert recognizer.best_distance(outs[5], reference) >= recognizer.MATCH_DISTANCE


def test_inplace_render_gives_the_same_frame_in_the_frame_it_was_given(astronaut, swapped):
    """The replacer's path: render into its own copy instead of a new frame, same pixels."""
    img, lm = astronaut
    frame = img.copy()
    out = SwapRenderer(donor_seed=1).render(frame, lm, inplace=True)
    assert out is frame
    assert np.array_equal(out, swapped[1])


@pytest.mark.parametrize("shape", [0.0, 1.0])
def test_a_close_up_face_is_rendered_reduced_and_still_replaced_whole(astronaut, shape):
    """A face larger than MAX_RENDER_IOD (a close-up) goes through the reduced render: the
    hull is replaced completely, what lies beyond the face is the frame's own, the landmarks
    stay where they were (shape 0) and the recogniser no longer matches."""
    from dicom_deid.faces.swap import MAX_RENDER_IOD

    big, lm_big = synth.scaled(*astronaut, 4.0)
    assert mesh.inter_ocular(lm_big) > 1.2 * MAX_RENDER_IOD
    renderer = SwapRenderer(donor_seed=1, shape=shape)
    frame = big.copy()
    out = renderer.render(frame, lm_big, inplace=True)
    assert out is frame
    assert np.array_equal(out, renderer.render(big, lm_big))
    hull = synth.hull_mask(lm_big, big.shape)
    # (A rendered pixel may equal the original by chance, as anywhere.)
    assert np.all(out[hull] == big[hull], axis=1).mean() < 0.001
    assert np.array_equal(out[1700:], big[1700:])
    if shape == 0.0:
        measured = mesh.landmarks_from_image(out)
        assert measured is not None and _nme(lm_big, measured) < 3.0
    centre = tuple(lm_big[:, :2].mean(axis=0))
    reference = recognizer.descriptor_at(big, centre)
    assert np.linalg.norm(recognizer.descriptor_at(out, centre) - reference) \
        >= recognizer.MATCH_DISTANCE
