"""Shrinking detected boxes to their ink: on a plain ground only, never growing a box."""

from __future__ import annotations

import numpy as np

from dicom_deid.text.ink import tighten
from tests.text.frames import background, put


def test_a_loose_box_on_a_plain_ground_shrinks_to_its_ink() -> None:
    rgb = np.full((120, 200, 3), 30, np.uint8)
    ink = put(rgb, "09:03", 60, 70, scale=0.4)
    loose = np.array([[ink[0] - 15, ink[1] - 12, ink[2] + 15, ink[3] + 12, 0.9]], np.float32)
    tight = tighten(rgb, loose)[0]
    assert tight[4] == np.float32(0.9)                     # the score is kept
    # still holds all the ink ...
    assert tight[0] <= ink[0] and tight[1] <= ink[1] and tight[2] >= ink[2] and tight[3] >= ink[3]
    # ... and far less else: the loose box was 3x the ink's height
    assert tight[3] - tight[1] < 0.6 * (loose[0, 3] - loose[0, 1])
    assert tight[2] - tight[0] < (loose[0, 2] - loose[0, 0]) - 20


def test_a_box_on_a_busy_ground_is_kept_as_found() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)     # texture all round
    ink = put(rgb, "09:03", 60, 70, scale=0.4)
    loose = np.array([[ink[0] - 15, ink[1] - 12, ink[2] + 15, ink[3] + 12]], np.float32)
    assert np.array_equal(tighten(rgb, loose), loose)


def test_faint_text_keeps_its_box_and_no_box_grows() -> None:
    rgb = background(200, 120)
    # 10 grey levels over the ground: under FLOOR, nothing is ink, the box stays
    box = put(rgb, "ACC 2024", 20, 60, scale=0.5, colour=tuple(int(v) + 10 for v in rgb[60, 60]))
    loose = np.array([[box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6]], np.float32)
    out = tighten(rgb, loose)
    assert (out[:, :2] >= loose[:, :2]).all() and (out[:, 2:4] <= loose[:, 2:4]).all()
    assert np.array_equal(out, loose)


def test_faint_text_beside_a_fold_of_the_picture_keeps_its_box() -> None:
    # Light text on a white shirt with a grey fold at one end of the box: the fold is the
    # only "ink" there, and the box must not shrink to it.
    rgb = np.full((60, 240, 3), 235, np.uint8)
    text = put(rgb, "ACC A673812", 10, 40, scale=0.6, colour=(252, 252, 252))
    rgb[20:45, 200:215] = 150                                      # the fold
    loose = np.array([[4, 16, 236, 48]], np.float32)
    out = tighten(rgb, loose)[0]
    assert out[0] <= text[0] and out[2] >= text[2]
