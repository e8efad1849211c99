"""The cheap parts of the text stage's tracking, without the models: when a tracked box counts
as changed (its glyphs, not the picture behind them), and where a changed tile is detected
(around the new edges in it, not the whole tile)."""

from __future__ import annotations

import cv2
import numpy as np

from dicom_deid.text.stage import TILE, TextStage, _glyphs, _text_changed
from tests.text.frames import put


def _box_over(picture_seed: int, text: str) -> np.ndarray:
    """Grey pixels of a 40x140 box: white text over a busy picture that differs per seed."""
    rng = np.random.default_rng(picture_seed)
    rgb = cv2.resize(rng.integers(0, 160, (5, 14, 3), dtype=np.uint8), (140, 40),
                     interpolation=cv2.INTER_CUBIC)
    if text:
        put(rgb, text, 4, 28, colour=(255, 255, 255), thickness=2)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def test_same_text_over_a_moving_picture_is_not_changed() -> None:
    first = _box_over(0, "14:32:05")
    reference = (first, _glyphs(first))
    assert reference[1].any()
    for seed in range(1, 6):
        now = _box_over(seed, "14:32:05")
        # the box as a whole did change (round 1 re-detected it at every key frame) ...
        assert cv2.absdiff(now, first).mean() > 10
        # ... its glyphs did not
        assert not _text_changed(now, reference), seed


def test_changed_gone_or_covered_text_is_changed() -> None:
    first = _box_over(0, "14:32:05")
    reference = (first, _glyphs(first))
    assert _text_changed(_box_over(0, "14:32:06"), reference)     # one digit ticked
    assert _text_changed(_box_over(3, "14:33:17"), reference)
    assert _text_changed(_box_over(0, ""), reference)             # the text went
    covered = first.copy()
    covered[:, 40:100] = 90                                       # something passed in front
    assert _text_changed(covered, reference)


def test_a_changed_tile_is_detected_around_its_new_edges_only() -> None:
    tiles = np.zeros((4, 4), bool)
    tiles[1, 2] = True
    edges = np.zeros((4 * TILE, 4 * TILE), np.uint8)
    edges[TILE + 10:TILE + 16, 2 * TILE + 20:2 * TILE + 50] = 1   # a short word in the tile
    edges[5, 5] = 1                                               # outside the changed tile
    rects = TextStage._edge_rects(tiles, edges)
    assert len(rects) == 1
    x0, y0, x1, y1 = rects[0]
    # around the word (frame pixels = 2 x half resolution), far smaller than the tile
    assert x0 <= 2 * (2 * TILE + 20) and x1 >= 2 * (2 * TILE + 50)
    assert y0 <= 2 * (TILE + 10) and y1 >= 2 * (TILE + 16)
    # round 1 detected the tile and 48 px around it: 224 x 224 frame pixels
    assert (x1 - x0) * (y1 - y0) < 0.3 * (2 * TILE + 96) ** 2
    # without an edge map: the whole tile, as before
    x0, y0, x1, y1 = TextStage._edge_rects(tiles, None)[0]
    assert x1 - x0 >= 2 * TILE and y1 - y0 >= 2 * TILE


def test_a_still_finds_light_text_on_a_light_picture(detector) -> None:
    # Contrast of ~24 grey levels: at the frame's own scale the detector's probability map is
    # empty here (measured), the still's second detection at 1.5x finds the line.
    from dicom_deid.text import TextStage
    from tests.text.frames import covered

    rng = np.random.default_rng(0)
    rgb = np.clip(228 + rng.normal(0, 2, (480, 640, 3)), 0, 255).astype(np.uint8)
    box = put(rgb, "ACC 20240117", 300, 400, scale=0.5, colour=(252, 252, 252))
    stage = TextStage("redact-all", detector=detector, record=True)
    stage.process_image(rgb.copy())
    assert covered(stage.covered[0], box, rgb.shape) > 0.98
