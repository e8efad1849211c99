#!/usr/bin/env python
"""Build models/centerface_int8.onnx: CenterFace with int8 weights and activations.

The leak check runs CenterFace on every output frame; in int8 (onnxruntime static
quantisation, QDQ format, per-channel weights) it costs about a third less CPU on x86 with
VNNI. Calibration only sets each activation's range (min/max), an aggregate over the
calibration frames; the weights are the float model's, rounded.

Calibration frames: the London photos of even-numbered identities (neutral and smiling; the
odd ones are kept for benchmarks/centerface_int8.py, which decides whether the int8 model may
be used) pasted at face widths of 30 to 400 px into 1280x720 frames over plain and textured
backgrounds, plus skimage's sample photos; each frame is prepared exactly as the leak check
prepares it (`CenterFace.detect`, longer side 416).

The stem (the first convolution, on the 3 colour channels, and the depthwise convolution
after it) stays float: onnxruntime's int8 kernels are slowest exactly there (3 input channels,
one group per channel), so the model is faster with them in float than with them in int8.
The graph then takes the image itself, NHWC uint8 (a Cast and a Transpose in front), so the
leak check does not convert each frame to NCHW float32 for onnxruntime to convert it back.

Needs the `onnx` package, which pins a protobuf that MediaPipe cannot use, so run it in its own
environment (the product does not import `onnx`):

    python3.11 -m venv /tmp/quant && /tmp/quant/bin/pip install onnx onnxruntime==1.32.0 \
        numpy opencv-python-headless scikit-image
    /tmp/quant/bin/python scripts/quantize_centerface.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.faces.centerface import _INPUT, _SHAPES, NHWC_INPUT, input_blob  # noqa: E402
from dicom_deid.faces.leakcheck import DEFAULT_MAX_SIDE  # noqa: E402
from dicom_deid.faces.onnx_shapes import set_io_shapes  # noqa: E402

if TYPE_CHECKING:
    import onnx

FRAME = (1280, 720)
# Convolutions left in float, counted from the input (see the module doc).
FLOAT_STEM = 2
# The landmark output (five points per cell at stride 4): the leak check reads boxes only.
LANDMARKS = "540"


def calibration_photos(data: Path) -> list[Path]:
    out = []
    for path in sorted(glob.glob(str(data / "faces" / "london" / "*" / "*.jpg"))):
        if int(Path(path).stem.split("_")[0]) % 2 == 0:
            out.append(Path(path))
    return out


def calibration_frames(photos: list[Path], seed: int = 0) -> Iterator[np.ndarray]:
    from skimage import data as samples

    rng = np.random.default_rng(seed)
    for path in photos:
        photo = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        # The photo's face is roughly its middle half: scale so that it is 30 to 400 px wide.
        width = float(np.exp(rng.uniform(np.log(30), np.log(400))))
        scale = width / (0.5 * photo.shape[1])
        small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            canvas = np.empty((FRAME[1], FRAME[0], 3), np.uint8)
            canvas[:] = rng.integers(20, 235, size=3, dtype=np.uint8)
        else:
            canvas = rng.integers(0, 256, size=(FRAME[1] // 8, FRAME[0] // 8, 3), dtype=np.uint8)
            canvas = cv2.resize(canvas, FRAME, interpolation=cv2.INTER_CUBIC)
        h, w = min(small.shape[0], FRAME[1]), min(small.shape[1], FRAME[0])
        y = int(rng.integers(0, FRAME[1] - h + 1))
        x = int(rng.integers(0, FRAME[0] - w + 1))
        canvas[y:y + h, x:x + w] = small[:h, :w]
        yield canvas
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        yield cv2.resize(getattr(samples, name)(), FRAME, interpolation=cv2.INTER_AREA)


def nhwc_uint8_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its NCHW float input replaced by NHWC uint8 (Cast, then Transpose)."""
    from onnx import TensorProto, checker, helper

    graph = model.graph
    old = next(i for i in graph.input if i.name == _INPUT)
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(NHWC_INPUT, TensorProto.UINT8,
                                                        ["B", "H", "W", 3]))
    nodes = [helper.make_node("Cast", [NHWC_INPUT], ["image_float"], to=TensorProto.FLOAT,
                              name="image_cast"),
             helper.make_node("Transpose", ["image_float"], [_INPUT], perm=[0, 3, 1, 2],
                              name="image_nchw")]
    nodes += list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    checker.check_model(model)
    return model


def without_landmarks(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its landmark head (LANDMARKS: five points per cell, which the leak
    check never reads): the convolution that feeds only that output, and the output itself."""
    graph = model.graph
    out = next(o for o in graph.output if o.name == LANDMARKS)
    graph.output.remove(out)
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    names = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in names]:
        graph.initializer.remove(init)
    for info in [v for v in graph.value_info if v.name not in names]:
        graph.value_info.remove(info)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "centerface.onnx")
    ap.add_argument("--output", type=Path, default=REPO / "models" / "centerface_int8.onnx")
    ap.add_argument("--float-stem", type=int, default=FLOAT_STEM,
                    help="convolutions left in float, counted from the input")
    # Measured on a 2-core AVX2 host without VNNI (benchmarks/results/2026-12-07/
    # centerface_variants_i21dicom6.json): dropping the landmark head saves about 1 % of the
    # check, moving the float/int8 boundary (0, 3, 4, 6 float convolutions) nothing beyond
    # the noise; so the shipped model keeps both as they were.
    ap.add_argument("--drop-landmarks", action="store_true",
                    help="drop the landmark head (the leak check does not read it)")
    args = ap.parse_args(argv)

    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    photos = calibration_photos(args.data)
    if not photos:
        raise SystemExit(f"no London photos under {args.data}/faces/london")
    model = onnx.load_from_string(set_io_shapes(args.model.read_bytes(), _SHAPES))
    # Per-channel DequantizeLinear (its `axis`) needs opset 13; the export is opset 9.
    model = version_converter.convert_version(model, 13)
    if args.drop_landmarks:
        model = without_landmarks(model)
    # The export leaves nodes unnamed; quantize_static excludes nodes by name.
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    stem = [n.name for n in model.graph.node if n.op_type == "Conv"][:args.float_stem]
    class Reader(CalibrationDataReader):
        """Calibration frames, prepared exactly as the leak check prepares its input."""

        def __init__(self, frames: Iterator[np.ndarray]) -> None:
            self._frames = frames

        def get_next(self) -> dict[str, np.ndarray] | None:
            frame = next(self._frames, None)
            return None if frame is None else {_INPUT: input_blob(frame, DEFAULT_MAX_SIDE)[0]}

    reader = Reader(calibration_frames(photos))
    with tempfile.TemporaryDirectory() as tmp:
        plain, prepared = Path(tmp) / "plain.onnx", Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "quantized.onnx"
        onnx.save(model, plain)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=stem)
        onnx.save(nhwc_uint8_input(onnx.load(str(quantized))), args.output)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({len(photos)} calibration photos), sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
