"""Cover boxes with the local background, leave the rest of the frame alone."""

from __future__ import annotations

import numpy as np

from dicom_deid.text.redact import box_mask, integer_boxes, redact


def test_fill_is_the_surrounding_colour_and_nothing_else_changes() -> None:
    rgb = np.full((60, 80, 3), (30, 60, 90), np.uint8)
    rgb[20:30, 20:50] = 255                       # the "text"
    before = rgb.copy()
    boxes = integer_boxes(np.array([[22, 21, 48, 29, 0.9]]), rgb.shape)
    # an 8 px box is grown to 12 px (MIN_HEIGHT), then 2 px at least (15 % of 12 is 2)
    assert boxes.tolist() == [[20, 17, 50, 33]]
    out = redact(rgb, boxes)
    assert out is rgb
    assert np.all(out[17:33, 20:50] == (30, 60, 90))
    outside = ~box_mask(rgb.shape, boxes)
    assert np.array_equal(out[outside], before[outside])


def test_the_margin_is_relative_to_the_box_height() -> None:
    # 50 px: 15 % is 7.5 -> 8 px a side; 20 px: 3; 14 px: 2 (a fixed 2 px plus a tenth of the
    # height gave 3-4 px around small lines, 1.38 % of a small clip's frame outside any text);
    # 7 px (a lone character's box from the detector at 8x): grown to 12 px, then 2
    boxes = integer_boxes(np.array([[100, 100, 300, 150], [10, 10, 60, 30], [10, 50, 60, 64],
                                    [261, 269, 267, 276]]), (400, 400, 3))
    assert boxes.tolist() == [[92, 92, 308, 158], [7, 7, 63, 33], [8, 48, 62, 66],
                              [259, 264, 269, 281]]


def test_boxes_are_clipped_and_empty_ones_dropped() -> None:
    boxes = integer_boxes(np.array([[-5, -5, 10, 10], [70, 50, 200, 200], [30, 30, 30, 30]]),
                          (60, 80, 3), pad=0)
    assert boxes.tolist() == [[0, 0, 10, 10], [70, 50, 80, 60]]
    assert integer_boxes(np.zeros((0, 5)), (60, 80, 3)).shape == (0, 4)


def test_a_box_over_the_whole_frame_is_filled_black() -> None:
    rgb = np.full((10, 10, 3), 200, np.uint8)
    redact(rgb, integer_boxes(np.array([[0, 0, 10, 10]]), rgb.shape))
    assert not rgb.any()
