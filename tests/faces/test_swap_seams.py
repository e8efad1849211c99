"""Swap's forehead seam, the donor rim's detail and the lips' colour on a darker face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dicom_deid.faces import donor_texture, mesh, render_mesh, swap
from dicom_deid.faces.donors import choose_donor, load_model
from tests.helpers import shared_data


def _lightness(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]


@pytest.fixture(scope="module")
def grid_frame() -> tuple[np.ndarray, np.ndarray]:
    """GRID lbax4n, frame 30 (RGB) and its face mesh: a lit forehead under short hair, where
    the forehead arc showed on every frame."""
    from dicom_deid.evaluate.observer import StaticMesh

    cap = cv2.VideoCapture(str(shared_data("video", "grid", "lbax4n.mpg")))
    frame = None
    for _ in range(31):
        ok, frame = cap.read()
        assert ok
    cap.release()
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    faces = StaticMesh().landmarks(rgb)
    assert faces
    return rgb, faces[0].astype(np.float32)


def _upper_border(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The band inside the patient's face hull 0.03-0.2 IODs from its edge, more than 0.3 IODs
    above the eye line: the forehead and temples, where the rendered face meets the patient's
    own skin."""
    iod = mesh.inter_ocular(lm)
    hull = render_mesh.hull_mask(lm[:, :2], rgb.shape[:2])
    inside = cv2.distanceTransform(hull, cv2.DIST_L2, 3)
    a, b = lm[mesh.OUTER_EYE_CORNERS[0], :2], lm[mesh.OUTER_EYE_CORNERS[1], :2]
    centre = (a + b) / 2.0
    down = np.array([-(b - a)[1], (b - a)[0]]) / float(np.hypot(*(b - a)))
    if float(np.dot(lm[152, :2] - centre, down)) < 0:
        down = -down
    ys, xs = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
    along = (xs - centre[0]) * down[0] + (ys - centre[1]) * down[1]
    return (hull > 0) & (inside > 0.03 * iod) & (inside < 0.2 * iod) & (along < -0.3 * iod)


def _seams_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forehead fixes as measured (off by default: see swap.FOREHEAD_SIGMA)."""
    monkeypatch.setattr(swap, "FOREHEAD_SIGMA", 0.1)
    monkeypatch.setattr(swap, "DONOR_NEAREST_FILL", True)
    monkeypatch.setattr(swap, "DONOR_EDGE_DETAIL", 0.06)
    monkeypatch.setattr(swap, "CHROMA_FLOOR", 0.4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_rendered_forehead_meets_the_patients_without_a_band(grid_frame, seed, monkeypatch):
    # Without FOREHEAD_SIGMA and the nearest-skin fill the rendered face along its upper edge
    # was 6.8-7.6 L from the patient's (a dark arc with a lighter patch under it); with, 3.5-4.7.
    _seams_on(monkeypatch)
    rgb, lm = grid_frame
    band = _upper_border(rgb, lm)
    assert band.sum() > 500
    out = swap.SwapRenderer(donor_seed=seed, shape=1.0, donor_candidates=1).render(rgb, lm)
    diff = _lightness(out) - _lightness(rgb)
    assert float(np.abs(diff[band]).mean()) < 5.5
    assert abs(float(diff[band].mean())) < 2.5


def test_without_the_forehead_shading_the_band_is_back(grid_frame, monkeypatch):
    """The measure above sees the arc: with the fine shading off it is over the bound."""
    rgb, lm = grid_frame
    band = _upper_border(rgb, lm)
    _seams_on(monkeypatch)
    monkeypatch.setattr(swap, "FOREHEAD_SIGMA", 0.0)
    monkeypatch.setattr(swap, "DONOR_NEAREST_FILL", False)
    out = swap.SwapRenderer(donor_seed=0, shape=1.0, donor_candidates=1).render(rgb, lm)
    diff = _lightness(out) - _lightness(rgb)
    assert float(np.abs(diff[band]).mean()) > 6.0


def test_the_cleaned_forehead_does_not_darken_toward_the_hairline():
    model = load_model()
    layout = model.layout
    tex = choose_donor(1, None, None).texture.astype(np.float32)
    # Dark brows widened: they must not colour the forehead continued above them.
    iod = float(np.linalg.norm(layout.uv[33] - layout.uv[263]))
    for brow in swap._BROWS:
        for i in brow:
            x, y = layout.uv[i].astype(int)
            cv2.circle(tex, (int(x), int(y)), max(2, round(0.04 * iod)), (40.0, 30.0, 25.0), -1)
    out = donor_texture.clean_texture(tex, model.mean_texture, layout, nearest_fill=True)
    out = out.mean(axis=2)
    col = int(round(layout.uv[168, 0]))
    rows = np.nonzero(layout.face_mask[:, col])[0]
    top = int(rows.min())
    brow_y = int(round(layout.uv[9, 1]))
    forehead = out[top:brow_y, col - 2 : col + 3].mean(axis=1)
    # Its upper third no darker than its lower two thirds by more than 4 %.
    third = max(1, len(forehead) // 3)
    assert forehead[:third].mean() > 0.96 * forehead[third:].mean()


def test_the_mean_textures_outline_line_is_not_drawn_over_the_forehead_and_temples():
    model = load_model()
    layout = model.layout
    tex = model.mean_texture.astype(np.float32)
    out = donor_texture.clean_texture(tex, model.mean_texture, layout, edge_detail=0.06)
    out = out.mean(axis=2)
    before = donor_texture.clean_texture(tex, model.mean_texture, layout)
    before = before.mean(axis=2)
    dist = cv2.distanceTransform(layout.face_mask.astype(np.uint8), cv2.DIST_L2, 5)
    iod = float(np.linalg.norm(layout.uv[33] - layout.uv[263]))
    eye_y = float(layout.uv[[33, 263], 1].mean())
    upper = (np.arange(layout.size)[:, None] < eye_y - 0.25 * iod) & np.ones((1, layout.size), bool)
    edge = upper & (dist > 0) & (dist <= 2)
    near = upper & (dist > 4) & (dist <= 8)
    # The mean texture's outline was a line 3-6 grey levels darker than the rim just inside;
    # without it the outermost texels are lighter by about that, and nothing moves inside.
    assert before[edge].mean() < before[near].mean() - 2.5
    assert (out - before)[edge].mean() > 2.0
    assert np.abs(out - before)[dist > 0.1 * iod].max() < 1e-3
    # Below the eyes (hair and background beside the face) it stays: it softens that edge.
    lower = ~upper & (np.arange(layout.size)[:, None] > eye_y + 0.25 * iod)
    assert np.array_equal(out[lower & (dist <= 2)], before[lower & (dist <= 2)])


def _lips_on_skin(
    skin_lab: tuple[float, float, float],
    lip_lab: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """A float-LAB face of one skin colour with a lip patch, and the patch's mask."""
    rng = np.random.default_rng(5)
    face = np.empty((80, 80, 3), np.float32)
    face[...] = skin_lab
    face += rng.normal(0.0, 1.5, face.shape).astype(np.float32)
    lips = np.zeros((80, 80), bool)
    lips[55:65, 25:55] = True
    face[lips] = lip_lab
    return face, lips


def _frame(rgb: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(6)
    return np.clip(rng.normal(0.0, 2.0, (80, 80, 3)) + np.array(rgb), 0, 255).astype(np.uint8)


def test_the_lips_chroma_follows_a_darker_skin():
    # The donor's lips against its skin: a +10.7, b -9.9 (London 061's render).
    src, lips = _lips_on_skin((50.5, 10.3, 16.4), (46.1, 21.0, 6.6))
    region = np.full((80, 80), 255, np.uint8)
    offsets = {}
    for name, rgb in (("dark", (75, 58, 50)), ("light", (200, 150, 130))):
        out = render_mesh.to_lab(
            render_mesh.match_colour_lab(src, _frame(rgb), region, None, chroma_floor=0.4)
        )
        offsets[name] = out[lips].mean(axis=0) - out[~lips].mean(axis=0)
    src_offset = src[lips].mean(axis=0) - src[~lips].mean(axis=0)
    # On a skin lighter than the donor's the lips keep their colour against the skin (within
    # the contrast gain's limits); on a skin half as light, about half the chroma offset.
    light_ratio = np.hypot(*offsets["light"][1:]) / np.hypot(*src_offset[1:])
    dark_ratio = np.hypot(*offsets["dark"][1:]) / np.hypot(*src_offset[1:])
    assert 0.75 < light_ratio < 1.3
    assert dark_ratio < 0.7
    assert dark_ratio < 0.75 * light_ratio


def test_the_chroma_scale_can_be_turned_off():
    src, lips = _lips_on_skin((50.5, 10.3, 16.4), (46.1, 21.0, 6.6))
    region = np.full((80, 80), 255, np.uint8)
    frame = _frame((75, 58, 50))
    out = render_mesh.to_lab(
        render_mesh.match_colour_lab(src, frame, region, None, chroma_floor=None)
    )
    offset = out[lips].mean(axis=0) - out[~lips].mean(axis=0)
    src_offset = src[lips].mean(axis=0) - src[~lips].mean(axis=0)
    assert np.hypot(*offset[1:]) / np.hypot(*src_offset[1:]) > 0.75
