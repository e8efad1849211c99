"""Cover boxes with the local background, leave the rest of the frame alone."""

from __future__ import annotations

import numpy as np

from dicom_deid.text.redact import box_mask, integer_boxes, redact


def test_fill_is_the_surrounding_colour_and_nothing_else_changes() -> None:
    rgb = np.full((60, 80, 3), (30, 60, 90), np.uint8)
    rgb[20:30, 20:50] = 255                       # the "text"
    before = rgb.copy()
    boxes = integer_boxes(np.array([[22, 21, 48, 29, 0.9]]), rgb.shape)
    # 2 px, and a tenth of the box's height (8 px: 1 more)
    assert boxes.tolist() == [[19, 18, 51, 32]]
    out = redact(rgb, boxes)
    assert out is rgb
    assert np.all(out[18:32, 19:51] == (30, 60, 90))
    outside = ~box_mask(rgb.shape, boxes)
    assert np.array_equal(out[outside], before[outside])


def test_large_text_gets_a_wider_margin() -> None:
    boxes = integer_boxes(np.array([[100, 100, 300, 150]]), (400, 400, 3))
    assert boxes.tolist() == [[93, 93, 307, 157]]


def test_boxes_are_clipped_and_empty_ones_dropped() -> None:
    boxes = integer_boxes(np.array([[-5, -5, 10, 10], [70, 50, 200, 200], [30, 30, 30, 30]]),
                          (60, 80, 3), pad=0)
    assert boxes.tolist() == [[0, 0, 10, 10], [70, 50, 80, 60]]
    assert integer_boxes(np.zeros((0, 5)), (60, 80, 3)).shape == (0, 4)


def test_a_box_over_the_whole_frame_is_filled_black() -> None:
    rgb = np.full((10, 10, 3), 200, np.uint8)
    redact(rgb, integer_boxes(np.array([[0, 0, 10, 10]]), rgb.shape))
    assert not rgb.any()
