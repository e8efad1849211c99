"""Mask3DRenderer: an identity-free mean-shape face, posed like the patient, following eyelids,
gaze and mouth, covering the whole face hull; alone and inside FaceReplacer."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.faces import FaceReplacer, mask3d, mask_surface, mesh
from dicom_deid.faces.mask3d import IDENTITY_SPREAD, Mask3DRenderer
from dicom_deid.faces.region import BASELINE_FOREHEAD, BASELINE_MARGIN, covered_region
from tests.faces import recognizer, synth


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(synth.astronaut()), synth.astronaut_landmarks().astype(np.float32)


def _canonical_residual(geometry: np.ndarray, canonical: np.ndarray) -> float:
    """How far a posed shape is from the mean shape once pose is taken out (per eye distance)."""
    pts = mesh.MESH_POINTS
    fit = mesh.fit_similarity(canonical[:pts], geometry[:pts])
    err = np.linalg.norm(fit.apply(canonical[:pts]) - geometry[:pts], axis=1).mean()
    return float(err / mesh.inter_ocular(geometry))


def test_mask_covers_the_hull_and_hides_the_identity(astronaut):
    img, lm = astronaut
    before = img.copy()
    out = Mask3DRenderer().render(img, lm)
    assert np.array_equal(img, before)
    hull = synth.hull_mask(lm, img.shape)
    assert np.all(out[hull] == img[hull], axis=1).mean() < 0.01
    # Beyond the hull, the hairline and jaw outline are covered too (the baselines' growth).
    grown = covered_region(lm, img.shape, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN) > 0
    assert np.all(out[grown] == img[grown], axis=1).mean() < 0.01
    assert np.array_equal(out[400:], img[400:])
    centre = tuple(lm[:, :2].mean(axis=0))
    reference = recognizer.descriptor_at(img, centre)
    assert recognizer.best_distance(out, reference) >= recognizer.MATCH_DISTANCE


def _shape_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean point distance between two shapes once a similarity is taken out (per eye distance)."""
    pts = mesh.MESH_POINTS
    fit = mesh.fit_similarity(np.asarray(a[:pts], np.float64), np.asarray(b[:pts], np.float64))
    err = np.linalg.norm(fit.apply(a[:pts]) - b[:pts], axis=1).mean()
    return float(err / mesh.inter_ocular(b))


def test_the_patients_face_shape_is_not_kept(astronaut):
    """Two people with the same expression get the same mask: a change of face shape along the
    expression model's identity basis (two standard deviations) does not reach the mask."""
    _, lm = astronaut
    renderer = Mask3DRenderer()
    model = renderer.expression
    patient, pose = model.to_canonical(lm)
    base = renderer.mask_geometry(lm, track_id=0)
    with np.load(model.path) as data:
        sd = np.sqrt(data["identity_variances"])
    for k in range(3):
        offset = np.zeros((mesh.LANDMARK_COUNT, 3))
        offset[: mesh.MESH_POINTS] = (model.identity_basis[k] * 2 * sd[k]).reshape(-1, 3)
        other = pose.apply(patient + offset).astype(np.float32)
        geo = renderer.mask_geometry(other, track_id=k + 1)
        assert _shape_difference(lm, other) > 0.01
        assert _shape_difference(base, geo) < 0.05 * _shape_difference(lm, other)
    # Nor does its own shape: the mask is the mean shape plus only an expression displacement.
    assert _canonical_residual(base, renderer.model.canonical) < \
        _canonical_residual(lm, renderer.model.canonical)


def _smile(lm: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """The landmarks with the lips drawn outward and the corners up, as in a smile."""
    iod = mesh.inter_ocular(lm)
    lips = sorted(set(mask_surface.OUTER_LIPS + mesh.INNER_LIPS_UPPER + mesh.INNER_LIPS_LOWER))
    centre = (lm[61, :2] + lm[291, :2]) / 2
    half = np.linalg.norm(lm[61, :2] - lm[291, :2]) / 2
    out = lm.copy()
    t = (lm[lips, 0] - centre[0]) / half
    out[lips, 0] += amount * 0.12 * iod * t
    out[lips, 1] -= amount * 0.08 * iod * t * t
    return out


def _mouth(p: np.ndarray) -> tuple[float, float]:
    """(corner-to-corner width, corner height above the eye line), per eye distance."""
    iod = mesh.inter_ocular(p)
    width = np.linalg.norm(p[61, :2] - p[291, :2]) / iod
    height = ((p[33, 1] + p[263, 1]) / 2 - (p[61, 1] + p[291, 1]) / 2) / iod
    return float(width), float(height)


def test_a_single_smiling_image_keeps_its_smile(astronaut):
    """One image, no track history: the expression is fitted against the identity basis, so a
    smile widens the mask's mouth and lifts its corners (with the old per-track median the
    neutral of a single image was the image itself, and every photo came out neutral)."""
    _, lm = astronaut
    neutral = Mask3DRenderer().mask_geometry(lm, track_id=0)
    smiling = Mask3DRenderer().mask_geometry(_smile(lm), track_id=0)
    width_n, height_n = _mouth(neutral)
    width_s, height_s = _mouth(smiling)
    patient_widening = _mouth(_smile(lm))[0] - _mouth(lm)[0]
    assert width_s - width_n > 0.2 * patient_widening
    assert height_s > height_n + 0.01  # the corners rise toward the eyes


def test_a_smile_in_video_moves_the_mask_against_the_tracks_neutral(astronaut):
    _, lm = astronaut
    renderer = Mask3DRenderer()
    for _ in range(10):
        neutral = renderer.mask_geometry(lm, track_id=4)
    smiling = renderer.mask_geometry(_smile(lm), track_id=4)
    patient_widening = _mouth(_smile(lm))[0] - _mouth(lm)[0]
    assert _mouth(smiling)[0] - _mouth(neutral)[0] > 0.7 * patient_widening


def test_eyelids_and_gaze_follow_the_patient(astronaut):
    _, lm = astronaut
    renderer = Mask3DRenderer()
    for _ in range(5):
        open_geo = renderer.mask_geometry(lm, track_id=7)
    closed_geo = renderer.mask_geometry(synth.eyes_open_to(lm, 0.0), track_id=7)
    assert mesh.eye_aspect_ratio(open_geo) > 0.15
    assert mesh.eye_aspect_ratio(closed_geo) < 0.02
    # Gaze: shifting the patient's irises to the side shifts the mask's irises the same way.
    iod = mesh.inter_ocular(lm)
    looking = lm.copy()
    for iris in (mesh.RIGHT_IRIS, mesh.LEFT_IRIS):
        looking[list(iris), 0] += 0.05 * iod
    look_geo = renderer.mask_geometry(looking, track_id=7)
    for iris in (mesh.RIGHT_IRIS, mesh.LEFT_IRIS):
        dx = look_geo[iris[0], 0] - open_geo[iris[0], 0]
        assert dx == pytest.approx(0.05 * iod, rel=0.35)


def test_mouth_opening_follows_the_patient(astronaut):
    _, lm = astronaut
    renderer = Mask3DRenderer()
    for _ in range(5):
        neutral = renderer.mask_geometry(lm, track_id=1)
    opened = lm.copy()
    iod = mesh.inter_ocular(lm)
    opened[list(mesh.INNER_LIPS_LOWER[1:-1]), 1] += 0.15 * iod
    geo = renderer.mask_geometry(opened, track_id=1)
    gap_open = geo[14, 1] - geo[13, 1]
    gap_neutral = neutral[14, 1] - neutral[13, 1]
    assert gap_open - gap_neutral > 0.1 * iod


def test_the_mask_follows_head_pose():
    frames, truth = synth.sequence(2, "rotate")
    renderer = Mask3DRenderer()
    geos = [renderer.mask_geometry(t.astype(np.float32), track_id=0) for t in truth]
    def angle(p):
        v = p[263, :2] - p[33, :2]
        return np.degrees(np.arctan2(v[1], v[0]))
    true_turn = angle(truth[1]) - angle(truth[0])
    assert abs(true_turn) > 40
    assert angle(geos[1]) - angle(geos[0]) == pytest.approx(true_turn, abs=2.0)


def _yawed(lm: np.ndarray, degrees: float, renderer: Mask3DRenderer) -> np.ndarray:
    """The same face turned about the vertical axis in 3D."""
    patient, pose = renderer.expression.to_canonical(lm)
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    centre = patient[: mesh.MESH_POINTS].mean(axis=0)
    return pose.apply((patient - centre) @ rot.T + centre).astype(np.float32)


@pytest.fixture(autouse=True)
def _no_study_rests():
    """Each test starts with no study's resting attitude known (a process-wide table)."""
    mask3d._STUDY_REST.clear()
    yield
    mask3d._STUDY_REST.clear()


def test_a_tracks_resting_attitude_is_replaced_and_movement_kept(astronaut):
    """A head held a few degrees turned at rest (a habit, the same in every capture of a person:
    two captures of one person linked by it) gives, within the renderer's rest limit and per
    track (``rest_scope="track"``), the same mask as a frontal one; a turn during the track,
    and a large turn, still move the mask."""
    _, lm = astronaut
    limit = 8.0
    habit_deg = 0.8 * limit
    renderer = Mask3DRenderer(donor_seed=3, rest_limit_degrees=limit, rest_scope="track")
    front = renderer.mask_geometry(lm, track_id=0)
    habit = renderer.mask_geometry(_yawed(lm, habit_deg, renderer), track_id=1)
    other_way = renderer.mask_geometry(_yawed(lm, -habit_deg, renderer), track_id=2)
    def seen(a: np.ndarray, b: np.ndarray) -> float:   # as the camera sees it: x, y only
        return _shape_difference(a[:, :2], b[:, :2])

    patient_change = seen(_yawed(lm, habit_deg, renderer), lm)
    assert patient_change > 0.004
    assert seen(front, habit) < 0.1 * patient_change
    assert seen(front, other_way) < 0.1 * patient_change

    def yaw_of(points: np.ndarray) -> float:
        _, pose = renderer.expression.to_canonical(points)
        return float(np.degrees(np.arcsin(-pose.rotation[2, 0])))

    for _ in range(20):
        renderer.mask_geometry(lm, track_id=3)
    turned = renderer.mask_geometry(_yawed(lm, 15.0, renderer), track_id=3)
    assert yaw_of(turned) - yaw_of(front) == pytest.approx(15.0, abs=2.0)
    large = Mask3DRenderer(donor_seed=4, rest_limit_degrees=limit,
                           rest_scope="track").mask_geometry(_yawed(lm, 30.0, renderer), track_id=0)
    assert yaw_of(large) - yaw_of(front) > 15.0
    # Off (limit 0), the habit shows in the mask as it does in the face.
    off = Mask3DRenderer(donor_seed=5, rest_limit_degrees=0.0)
    assert seen(off.mask_geometry(lm, track_id=0),
                off.mask_geometry(_yawed(lm, habit_deg, off), track_id=1)) > 0.5 * patient_change


def test_the_studys_first_face_sets_its_rest_and_later_faces_keep_their_movement(astronaut):
    """By default the resting attitude is the study's: its first face (within the limit) is
    turned to the front, and every later face of the study, in the same renderer or in another
    one (another instance of the study), is turned by the same amount, so a head that moved
    between two captures of a study moves the mask too; another study is taken to the front
    on its own."""
    _, lm = astronaut
    assert mask3d.REST_SCOPE == "study" and mask3d.REST_LIMIT_DEGREES > 0
    habit_deg = 0.75 * mask3d.REST_LIMIT_DEGREES
    probe = Mask3DRenderer(identity_spread=0.0)
    habit = _yawed(lm, habit_deg, probe)

    def yaw_of(points: np.ndarray) -> float:
        _, pose = probe.expression.to_canonical(points)
        return float(np.degrees(np.arcsin(-pose.rotation[2, 0])))

    def mask(seed: int, points: np.ndarray, track_id: int = 0,
             renderer: Mask3DRenderer | None = None) -> np.ndarray:
        r = renderer or Mask3DRenderer(donor_seed=seed, identity_spread=0.0)
        return r.mask_geometry(points, track_id=track_id)

    front = mask(1, lm)                       # study 1's first face: its own rest
    first = Mask3DRenderer(donor_seed=2, identity_spread=0.0)
    turned_first = mask(2, habit, renderer=first)
    assert yaw_of(turned_first) == pytest.approx(yaw_of(front), abs=0.5)
    # The same study: the head back by habit_deg, in a new track and in a new renderer.
    moved = yaw_of(lm) - yaw_of(habit)
    assert abs(moved) > 0.7 * habit_deg
    for later in (mask(2, lm, track_id=1, renderer=first), mask(2, lm)):
        assert yaw_of(later) - yaw_of(front) == pytest.approx(moved, abs=1.0)
    # Another study with the turned head: to the front again.
    assert yaw_of(mask(3, habit)) == pytest.approx(yaw_of(front), abs=0.5)
    # No seed, no study: the renderer's own first face sets its rest, nothing is shared.
    assert yaw_of(probe.mask_geometry(habit)) == pytest.approx(yaw_of(front), abs=0.5)
    assert not any(k[0] is None for k in mask3d._STUDY_REST)
    with pytest.raises(ValueError, match="rest_scope"):
        Mask3DRenderer(rest_scope="frame")


def test_the_pitch_has_its_own_rest_limit(astronaut):
    _, lm = astronaut
    probe = Mask3DRenderer(donor_seed=3)
    patient, pose = probe.expression.to_canonical(lm)
    t = np.radians(6.0)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    centre = patient[: mesh.MESH_POINTS].mean(axis=0)
    nodding = pose.apply((patient - centre) @ rot.T + centre).astype(np.float32)
    patient_change = _shape_difference(nodding[:, :2], lm[:, :2])
    assert patient_change > 0.004

    def change(**options) -> float:
        r = Mask3DRenderer(donor_seed=3, rest_scope="track", **options)
        return _shape_difference(r.mask_geometry(lm, track_id=0)[:, :2],
                                 r.mask_geometry(nodding, track_id=1)[:, :2])

    # (a wide limit: the astronaut herself holds her head a little tilted)
    assert change(rest_limit_degrees=30.0) < 0.1 * patient_change
    assert change(rest_limit_degrees=30.0, rest_pitch_limit_degrees=0.0) > 0.5 * patient_change


def test_mask3d_through_the_replacer_on_a_moving_sequence():
    frames, truth = synth.sequence(10, "scale")
    with FaceReplacer("mask3d", fps=25.0) as rep:
        outs = []
        for rgb, gt in zip(frames, truth, strict=True):
            out = rep.process(rgb)
            outs.append(out)
            hull = synth.hull_mask(gt, rgb.shape)
            assert np.all(out[hull] == rgb[hull], axis=1).mean() < 0.02
            assert not rep.last.leak
        report = rep.close()
    assert report.renderer_failures == 0 and report.leaks == 0
    assert report.fallback_frames <= 1
    # The replacer hands the track id to the mask, which keeps its neutral estimate per track.
    assert set(rep.renderer._tracks) == {t.track_id for t in report.tracks}
    reference = recognizer.descriptor_at(frames[-1], tuple(truth[-1][:, :2].mean(axis=0)))
    assert recognizer.best_distance(outs[-1], reference) >= recognizer.MATCH_DISTANCE


def test_every_study_gets_the_same_neutral_mask(astronaut, monkeypatch):
    """Issue 15 item 4: one material for everybody. Two studies (two patients, or one patient
    under two keys) get the same colours, light and eye size; with PER_STUDY_SHAPE off also the
    same shape, so on the same landmarks the same geometry; no face texture, one flat colour
    with painted lips and brows."""
    _, lm = astronaut
    a, b, none = Mask3DRenderer(donor_seed=11), Mask3DRenderer(donor_seed=12), Mask3DRenderer()
    for r in (b, none):
        assert np.array_equal(a.texture, r.texture)
        assert np.array_equal(a.material.skin, r.material.skin)
        assert np.array_equal(a.material.light, r.material.light)
        assert np.array_equal(a.iris_rgb, r.iris_rgb)
        assert a.material.eye_opening == r.material.eye_opening
    # The shape is drawn per study (PER_STUDY_SHAPE), nobody's.
    assert np.array_equal(a.identity_offset, a.expression.identity_sample(11, IDENTITY_SPREAD))
    assert _shape_difference(a.mask_geometry(lm, 5), b.mask_geometry(lm, 5)) > 0.01
    monkeypatch.setattr(mask3d, "PER_STUDY_SHAPE", False)
    a, b = Mask3DRenderer(donor_seed=11), Mask3DRenderer(donor_seed=12)
    assert np.array_equal(a.identity_offset, b.identity_offset)
    assert np.array_equal(a.rest_expression, b.rest_expression)
    assert not np.any(a.identity_offset)
    flat = np.all(np.abs(a.texture - a.material.skin) < 0.5, axis=2)
    assert flat.mean() > 0.85   # everything but the lips and brows
    assert np.array_equal(a.mask_geometry(lm, 5), b.mask_geometry(lm, 5))
    # The eye is the mean shape's times a fixed opening that keeps lid movement readable.
    assert a.material.eye_opening >= mask_surface.EYE_OPENING_RANGE[0]


def test_the_surface_is_designed_per_study_when_asked(astronaut, monkeypatch):
    """With PER_STUDY_DESIGN the design (tint, light, brow and lip proportions, a synthetic face
    shape) is drawn from the study's seed alone: the same seed gives the same mask, another seed
    another shape; without the synthetic shape and the study's resting expression every study
    has the same shape up to its turn."""
    monkeypatch.setattr(mask3d, "PER_STUDY_DESIGN", True)
    _, lm = astronaut
    a, a2 = Mask3DRenderer(donor_seed=11), Mask3DRenderer(donor_seed=11)
    b = Mask3DRenderer(donor_seed=12)
    assert np.array_equal(a.texture, a2.texture)
    assert np.abs(a.material.skin - b.material.skin).max() > 5.0
    assert not np.array_equal(a.texture, b.texture)
    for r in (a, b, Mask3DRenderer()):
        flat = np.all(np.abs(r.texture - r.material.skin) < 0.5, axis=2)
        assert flat.mean() > 0.85   # everything but the lips and brows
    geo_a, geo_a2, geo_b = (r.mask_geometry(lm, 5) for r in (a, a2, b))
    assert np.array_equal(geo_a, geo_a2)
    assert _shape_difference(geo_a, geo_b) > 0.01
    # The study's shape is the mean plus the identity model's sample for the seed, nobody's.
    assert np.array_equal(a.identity_offset, a.expression.identity_sample(11, IDENTITY_SPREAD))
    flat_a, flat_b = (Mask3DRenderer(donor_seed=s, identity_spread=0.0,
                                     rest_expression_scale=None) for s in (11, 12))
    geo_a, geo_b = flat_a.mask_geometry(lm, 5), flat_b.mask_geometry(lm, 5)
    fit = mesh.fit_similarity(geo_a, geo_b)
    residual = np.linalg.norm(fit.apply(geo_a) - geo_b, axis=1).max() / mesh.inter_ocular(lm)
    assert residual < 1e-3
    assert fit.scale == pytest.approx(1.0, abs=1e-3)
    turn = np.degrees(np.arccos(np.clip((np.trace(fit.rotation) - 1) / 2, -1, 1)))
    assert turn <= 2 * np.sqrt(2) * mask_surface.TURN_DEGREES + 0.1


def test_no_patient_pixel_reaches_the_mask(astronaut):
    """Whatever the patient's skin, lighting or texture, the covered region comes out the same:
    colour and lightness are the material's and the pose's, nothing is measured in the frame."""
    import cv2

    img, lm = astronaut
    grown = covered_region(lm, img.shape, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN)
    other = img.copy()
    other[grown > 0] = 255 - other[grown > 0]
    out = Mask3DRenderer(donor_seed=5).render(img, lm)
    out_other = Mask3DRenderer(donor_seed=5).render(other, lm)
    inner = cv2.erode(grown, np.ones((7, 7), np.uint8)) > 0
    assert np.array_equal(out[inner], out_other[inner])


def test_the_grown_forehead_is_the_material_not_a_dark_band(astronaut):
    """Beyond the mesh (the grown forehead and jaw margin) the mask continues in its own
    material; the old continuation of the rendered pixels ran out and left a black cap."""
    img, lm = astronaut
    renderer = Mask3DRenderer(donor_seed=5)
    out = renderer.render(img, lm)
    grown = covered_region(lm, img.shape, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN) > 0
    rows = np.arange(img.shape[0])[:, None]
    above = grown & (rows < lm[10, 1])   # above the mesh's forehead top
    assert above.sum() > 500
    ratio = out[above].astype(np.float64).mean(axis=1) / renderer.material.skin.mean()
    assert np.percentile(ratio, 2) > 0.6


def test_a_partly_closed_eye_closes_the_mask(astronaut):
    """The patient's eye at a quarter of its usual opening is a blink under way: the mask's eye
    shuts, so the blink reads as one (a landmark model sees a slit as a narrowed open eye)."""
    _, lm = astronaut
    renderer = Mask3DRenderer()
    for _ in range(5):
        open_geo = renderer.mask_geometry(lm, track_id=2)
    half = renderer.mask_geometry(synth.eyes_open_to(lm, 0.6), track_id=2)
    blink = renderer.mask_geometry(synth.eyes_open_to(lm, 0.25), track_id=2)
    assert mesh.eye_aspect_ratio(blink) < 0.01
    assert 0.01 < mesh.eye_aspect_ratio(half) < mesh.eye_aspect_ratio(open_geo)


def test_a_small_face_is_covered_and_its_blink_shows(astronaut):
    """A 360 x 288 video's face: rendered finer and averaged down; what the mask does not cover
    stays exactly the frame's, the open eye shows its white and the closed one none."""
    import cv2

    small, lm_small = synth.scaled(*astronaut, 0.25)
    renderer = Mask3DRenderer()
    assert mesh.inter_ocular(lm_small) < renderer.supersample_iod / 2
    for _ in range(5):
        opened = renderer.render(small, lm_small, track_id=3)
    closed = renderer.render(small, synth.eyes_open_to(lm_small, 0.1), track_id=3)
    grown = covered_region(lm_small, small.shape, forehead=BASELINE_FOREHEAD,
                           margin=BASELINE_MARGIN) > 0
    near = cv2.dilate(grown.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert np.array_equal(opened[~near], small[~near])
    hull = synth.hull_mask(lm_small, small.shape)
    assert np.all(opened[hull] == small[hull], axis=1).mean() < 0.02

    # Read back as a landmark model sees it (the evaluation's static face mesh).
    from dicom_deid.evaluate.observer import StaticMesh
    from dicom_deid.evaluate.utility import eye_aspect_ratio

    reader = StaticMesh()
    try:
        ear = {name: eye_aspect_ratio(reader.landmarks(frame)[0], "mediapipe")
               for name, frame in (("open", opened), ("closed", closed))}
    finally:
        reader.close()
    print(ear)
    assert ear["open"] > 0.2
    # The evaluation counts a blink under 0.75 x the clip's median; half the open value is a
    # clear margin under it.
    assert ear["closed"] < 0.5 * ear["open"]


@pytest.mark.parametrize("factor", [1.0, 0.25])
def test_inplace_render_gives_the_same_frame_in_the_frame_it_was_given(astronaut, factor):
    """Both the direct and the supersampled (small face) paths, as the replacer calls them."""
    img, lm = synth.scaled(*astronaut, factor) if factor != 1.0 else astronaut
    expected = Mask3DRenderer().render(img, lm, track_id=1)
    frame = img.copy()
    out = Mask3DRenderer().render(frame, lm, track_id=1, inplace=True)
    assert out is frame
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, img)


def _lip_gap(p: np.ndarray) -> float:
    """Mean inner-lip gap (lower minus upper lip), per eye distance."""
    up = list(mesh.INNER_LIPS_UPPER[1:-1])
    lo = list(mesh.INNER_LIPS_LOWER[1:-1])
    return float((p[lo, 1] - p[up, 1]).mean() / mesh.inter_ocular(p))


def _closed_lips(lm: np.ndarray) -> np.ndarray:
    """The landmarks with the inner lips brought together (the astronaut smiles with teeth)."""
    out = lm.copy()
    up = list(mesh.INNER_LIPS_UPPER[1:-1])
    lo = list(mesh.INNER_LIPS_LOWER[1:-1])
    mid = (out[up] + out[lo]) / 2
    out[up] = mid
    out[lo] = mid
    return out


def test_the_studys_resting_expression_replaces_the_patients(astronaut, monkeypatch):
    """One image each: the patient's resting expression is replaced (without PER_STUDY_SHAPE by
    the neutral faces' mean, with it by a draw per study: two studies, two resting faces)."""
    _, lm = astronaut
    monkeypatch.setattr(mask3d, "PER_STUDY_SHAPE", False)
    same = Mask3DRenderer(donor_seed=2).mask_geometry(lm)
    own = Mask3DRenderer(donor_seed=2, rest_expression_scale=None).mask_geometry(lm)
    assert _shape_difference(same, own) > 0.005
    monkeypatch.setattr(mask3d, "PER_STUDY_DESIGN", True)
    a = Mask3DRenderer(donor_seed=1).mask_geometry(lm)
    b = Mask3DRenderer(donor_seed=2, identity_spread=0.0).mask_geometry(lm)
    kept = Mask3DRenderer(donor_seed=2, identity_spread=0.0,
                          rest_expression_scale=None).mask_geometry(lm)
    assert _shape_difference(b, kept) > 0.005
    assert _shape_difference(a, b) > 0.005
    with pytest.raises(ValueError):
        Mask3DRenderer(rest_scope="nobody")


def test_closed_lips_stay_closed_whatever_the_studys_rest(astronaut, monkeypatch):
    monkeypatch.setattr(mask3d, "PER_STUDY_DESIGN", True)
    _, lm = astronaut
    closed = _closed_lips(lm)
    opened = 0
    for seed in range(8):
        geo = Mask3DRenderer(donor_seed=seed).mask_geometry(closed)
        assert abs(_lip_gap(geo)) < 0.002
        # Without the rule, some studies' resting faces part the lips on their own.
        r = Mask3DRenderer(donor_seed=seed)
        shape = r.canonical + r.identity_offset + r.expression.displacement(r.rest_expression)
        opened += _lip_gap(shape) > 0.01
    assert opened >= 1
    # A parted mouth still parts the mask's.
    geo = Mask3DRenderer(donor_seed=3).mask_geometry(lm)
    assert _lip_gap(geo) > 0.03


def _eye_opening(p: np.ndarray) -> float:
    up = list(mesh.RIGHT_EYE_UPPER[1:-1])
    lo = list(mesh.RIGHT_EYE_LOWER[1:-1])
    return float(np.linalg.norm(p[lo, :2] - p[up, :2], axis=1).sum() / mesh.inter_ocular(p))


def _narrowed(renderer: Mask3DRenderer, lm: np.ndarray, amount: float) -> np.ndarray:
    """The eyes narrowed along the expression model's own eye closing (so the neutral estimate
    keeps them open, as on GRID lbax4n: glasses, looking down), ``amount`` of a full closing."""
    model = renderer.expression
    can, pose = model.to_canonical(lm)
    shut = model.to_canonical(synth.eyes_open_to(lm, 0.0))[0]
    closing = model.coefficients(shut)[1] - model.coefficients(can)[1]
    return pose.apply(can + model.displacement(amount * closing)).astype(np.float32)


def test_narrow_open_eyes_fade_to_the_mask_eye_and_blinks_stay(astronaut):
    """A patient whose eyes stay at 2/3 of the neutral estimate's opening: after ~25 frames
    the mask's eyes are fully open, and a 3-frame blink still shuts them."""
    _, lm = astronaut
    reference = Mask3DRenderer()
    for _ in range(40):
        wide = reference.mask_geometry(lm, track_id=0)
    renderer = Mask3DRenderer(eye_reference_fade=25)
    narrow = _narrowed(renderer, lm, 0.7)
    first = renderer.mask_geometry(narrow, track_id=0)
    for _ in range(39):
        late = renderer.mask_geometry(narrow, track_id=0)
    blink = [renderer.mask_geometry(synth.eyes_open_to(lm, 0.05), track_id=0) for _ in range(3)]
    after = [renderer.mask_geometry(narrow, track_id=0) for _ in range(3)]
    assert _eye_opening(first) < 0.8 * _eye_opening(wide)     # a single image: as before
    assert _eye_opening(late) > 0.9 * _eye_opening(wide)
    assert max(_eye_opening(g) for g in blink) < 0.1 * _eye_opening(wide)
    assert _eye_opening(after[-1]) > 0.9 * _eye_opening(wide)
    # Without the fade (the default) the narrow eyes stay narrow.
    assert mask3d.EYE_REFERENCE_FADE is None
    still = Mask3DRenderer()
    for _ in range(40):
        geo = still.mask_geometry(narrow, track_id=0)
    assert _eye_opening(geo) < 0.8 * _eye_opening(wide)


def test_eyes_closed_through_a_track_keep_the_mask_closed(astronaut):
    _, lm = astronaut
    renderer = Mask3DRenderer(eye_reference_fade=25)
    closed = synth.eyes_open_to(lm, 0.1)
    for _ in range(60):
        geo = renderer.mask_geometry(closed, track_id=0)
    assert mesh.eye_aspect_ratio(geo) < 0.02


def test_a_closed_mouth_paints_no_cavity(astronaut):
    """Closed lips: no dark cavity pixel (the contour's outline used to paint a dark dot or
    stroke at the corner); an open mouth still shows its dark cavity."""
    img, lm = astronaut
    iod = mesh.inter_ocular(lm)
    x0, y0 = np.floor(lm[[61, 291], :2].min(axis=0) - 0.1 * iod).astype(int)
    x1, y1 = np.ceil(lm[[61, 291], :2].max(axis=0) + 0.1 * iod).astype(int)

    def dark(frame: np.ndarray) -> int:
        box = frame[max(y0 - 20, 0):y1 + 20, x0:x1].astype(np.int32)
        return int((box.max(axis=2) < 60).sum())

    for seed in (None, 1, 2):
        out = Mask3DRenderer(donor_seed=seed).render(img, _closed_lips(lm))
        assert dark(out) == 0
    assert dark(Mask3DRenderer(donor_seed=1).render(img, lm)) > 20


def test_the_rim_of_an_opening_is_left_out():
    line = (np.full(6, 4), np.arange(6) + 2)
    assert mask3d._inside_rim(line) is None
    ys, xs = np.mgrid[10:15, 20:25]
    inner = mask3d._inside_rim((ys.ravel(), xs.ravel()))
    assert inner is not None
    assert sorted(zip(inner[0].tolist(), inner[1].tolist(), strict=True)) == \
        [(y, x) for y in range(11, 14) for x in range(21, 24)]


def test_the_mask_parts_its_lips_no_further_than_the_patient(astronaut, monkeypatch):
    """Whatever the study's resting face, the mask's mean inner-lip gap stays under
    LIPS_GAP_RATIO times the patient's plus LIPS_SLACK (canonical units)."""
    monkeypatch.setattr(mask3d, "PER_STUDY_DESIGN", True)   # resting faces drawn per study
    _, lm = astronaut
    closed = _closed_lips(lm)
    up = list(mesh.INNER_LIPS_UPPER[1:-1])
    lo = list(mesh.INNER_LIPS_LOWER[1:-1])
    capped = 0
    for fraction in (0.25, 1.0):
        patient = closed + (lm - closed) * fraction
        r0 = Mask3DRenderer()
        can = r0.expression.to_canonical(patient)[0]
        gap = float((can[lo, 1] - can[up, 1]).mean())
        limit = mask3d.LIPS_GAP_RATIO * gap + mask3d.LIPS_SLACK
        for seed in range(8):
            r = Mask3DRenderer(donor_seed=seed)
            geo = r.expression.to_canonical(r.mask_geometry(patient))[0]
            got = float((geo[lo, 1] - geo[up, 1]).mean())
            assert got <= limit + 2e-3, (fraction, seed, got, limit)
            free = Mask3DRenderer(donor_seed=seed)
            free._close_lips_at_rest = lambda shape, patient: None  # type: ignore[method-assign]
            geo = free.expression.to_canonical(free.mask_geometry(patient))[0]
            capped += float((geo[lo, 1] - geo[up, 1]).mean()) > limit + 2e-3
    assert capped >= 1   # without the rule some studies part the lips further


def test_the_open_eye_is_wider_than_the_mean_shapes_for_every_study():
    """The mean shape's eye is narrow: a small face's lid movement then fell under a pixel and
    the evaluation read the mask's eye aspect ratio back from noise. Every study's open eye is
    at least EYE_OPENING_RANGE[0] times the mean's, drawn from the seed."""
    lo, hi = mask_surface.EYE_OPENING_RANGE
    assert lo >= 1.0
    openings = [mask_surface.material(seed).eye_opening for seed in range(200)]
    assert min(openings) >= lo and max(openings) <= hi
    assert max(openings) - min(openings) > 0.8 * (hi - lo)    # still a design varied per study
    assert mask_surface.material(None).eye_opening >= lo


def test_a_small_faces_slight_lid_movement_reads_back(astronaut):
    """On a 360 x 288 video's face the patient's eye narrowing step by step to 0.8 of its
    opening (no blink: what a clip without blinks is made of) reads back from the rendered mask
    as a steadily falling eye aspect ratio, not noise."""
    from dicom_deid.evaluate.observer import StaticMesh
    from dicom_deid.evaluate.utility import eye_aspect_ratio

    small, lm_small = synth.scaled(*astronaut, 0.25)
    renderer = Mask3DRenderer(donor_seed=1151663374)
    for _ in range(5):
        renderer.render(small, lm_small, track_id=4)
    steps = [1.0, 0.95, 0.9, 0.85, 0.8]
    frames = [renderer.render(small, synth.eyes_open_to(lm_small, s), track_id=4) for s in steps]
    reader = StaticMesh()
    try:
        ear = [eye_aspect_ratio(reader.landmarks(f)[0], "mediapipe") for f in frames]
    finally:
        reader.close()
    print(ear)
    assert np.corrcoef(steps, ear)[0, 1] > 0.95
    assert ear[-1] < 0.9 * ear[0]


def _iris_offset(geo: np.ndarray, iris: tuple, corners: tuple) -> np.ndarray:
    a, b = corners
    width = np.linalg.norm(geo[a, :2] - geo[b, :2])
    return (geo[iris[0], :2] - (geo[a, :2] + geo[b, :2]) / 2) / width


def test_a_resting_gaze_is_the_mean_shapes_and_a_look_aside_is_kept(astronaut):
    """Where a person's iris sits when looking ahead is partly the shape of their eye: on a single
    image an offset within GAZE_DEAD_ZONE gives the mean shape's gaze, a look aside stays one
    (less the dead zone)."""
    _, lm = astronaut
    iod = mesh.inter_ocular(lm)
    eyes = ((mesh.RIGHT_IRIS, (33, 133)), (mesh.LEFT_IRIS, (263, 362)))
    mean = Mask3DRenderer().canonical
    plain = Mask3DRenderer().mask_geometry(lm)
    nudged, aside = lm.copy(), lm.copy()
    for iris, _ in eyes:
        nudged[list(iris), 1] += 0.3 * mask3d.GAZE_DEAD_ZONE * 0.5 * iod
        aside[list(iris), 0] += 0.12 * iod
    geo_nudged = Mask3DRenderer().mask_geometry(nudged)
    geo_aside = Mask3DRenderer().mask_geometry(aside)
    for iris, corners in eyes:
        m = _iris_offset(mean, iris, corners)
        p = _iris_offset(plain, iris, corners)
        n = _iris_offset(geo_nudged, iris, corners)
        # The astronaut looks ahead: within the dead zone, her gaze and a nudged one alike
        # give about the mean shape's.
        assert np.abs(p - m).max() < 0.01
        assert np.abs(n - p).max() < 0.01
        assert _iris_offset(geo_aside, iris, corners)[0] - p[0] > 0.12


def test_a_resting_lip_and_brow_shape_is_dropped_and_a_smile_kept(astronaut, monkeypatch):
    """REST_KEEP_RATIO: a neutral face that differs from another only along the expression
    directions resting faces use as much as expressions (its own lip and brow shape at rest)
    gives nearly the same mask; a change along the smile direction still reaches it whole."""
    _, lm = astronaut
    monkeypatch.setattr(mask3d, "PER_STUDY_SHAPE", False)
    monkeypatch.setattr(mask3d, "REST_KEEP_RATIO", None)
    model = Mask3DRenderer().expression
    assert model.rest_covariance is not None
    spread = np.sqrt(model.expression_variances / np.diag(model.rest_covariance))
    restlike, smile = np.argsort(spread)[:8], [int(np.argmax(spread))]
    patient, pose = model.to_canonical(lm)

    def moved(ks: list | np.ndarray) -> float:
        coefficients = np.zeros(len(spread))
        coefficients[ks] = 3.0 * np.sqrt(model.expression_variances[ks])
        other = pose.apply(patient + model.displacement(coefficients)).astype(np.float32)
        return _shape_difference(Mask3DRenderer(donor_seed=3).mask_geometry(lm),
                                 Mask3DRenderer(donor_seed=3).mask_geometry(other))

    kept_rest, kept_smile = moved(restlike), moved(smile)
    monkeypatch.setattr(mask3d, "REST_KEEP_RATIO", 1.1)
    monkeypatch.setattr(mask3d, "REST_KEEP_OTHER", 0.0)
    assert spread[restlike].max() < 1.1 <= spread[smile[0]]
    assert kept_rest > 0.003                   # without it the resting shape comes through
    assert moved(restlike) < 0.25 * kept_rest  # with it, hardly any
    assert moved(smile) > 0.9 * kept_smile     # the smile is kept
    monkeypatch.setattr(mask3d, "REST_KEEP_OTHER", 0.3)
    assert 0.15 * kept_rest < moved(restlike) < 0.5 * kept_rest
