"""PP-OCRv4 detection and recognition on ONNX Runtime, on frames drawn here."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid.text.redact import integer_boxes
from tests.text.frames import background, covered, put


def test_detector_finds_each_line_and_nothing_on_a_clean_picture(detector) -> None:
    rgb = background()
    assert len(detector.detect(rgb)) == 0
    name = put(rgb, "DOE^JANE", 10, 30)
    dob = put(rgb, "1957-03-02", 180, 220, scale=0.5, colour=(10, 10, 10))
    boxes = detector.detect(rgb)
    assert 2 <= len(boxes) <= 4
    assert boxes.shape[1] == 5 and np.all(boxes[:, 4] >= detector.box_threshold)
    ints = integer_boxes(boxes, rgb.shape)       # as the redaction pads them
    assert covered(ints, name, rgb.shape) > 0.95
    assert covered(ints, dob, rgb.shape) > 0.95


def test_detector_rejects_what_is_not_a_frame(detector) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((20, 20), np.uint8))
    assert detector.detect(np.zeros((2, 2, 3), np.uint8)).shape == (0, 5)


def test_crop_at_the_frame_scale_finds_the_same_box(detector) -> None:
    rgb = background(640, 360)
    box = put(rgb, "MRN 48213977", 400, 300, scale=0.5)
    full = detector.detect(rgb)
    crop = rgb[250:330, 350:600]
    found = detector.detect(np.ascontiguousarray(crop), scale=detector.scale_for(360, 640))
    assert len(found) == 1 and len(full) >= 1
    found[:, [0, 2]] += 350
    found[:, [1, 3]] += 250
    assert covered(integer_boxes(found, rgb.shape), box, rgb.shape) > 0.95


def test_recognizer_reads_a_line(detector, recognizer) -> None:
    rgb = background()
    put(rgb, "MUELLER 1957", 20, 120, scale=0.8, thickness=2)
    boxes = detector.detect(rgb)
    assert len(boxes) == 1
    (text, confidence), = recognizer.read(rgb, boxes)
    assert text.replace(" ", "").upper() == "MUELLER1957"
    assert confidence > 0.8
    assert recognizer.read(rgb, np.array([[5, 5, 6, 6, 1.0]])) == [("", 0.0)]
