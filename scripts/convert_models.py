#!/usr/bin/env python
"""Convert the MediaPipe 0.10.21 models the product runs to ONNX (models/mp_*.onnx).

The models come from the mediapipe 0.10.21 wheel itself (its `modules/` folder), so the ONNX
files are the same Apache-2.0 weights, converted by tf2onnx's TFLite front end. The attention
face mesh (face_landmark_with_attention.tflite, the product's 478 points) uses three TFLite
custom ops that no converter maps; they are rebuilt here from standard ONNX operators (see
replace_mediapipe_ops). Its plain alternative, face_landmark (468 points) plus iris_landmark
(eye contour and iris, run on each eye), is converted too (`faces/onnx_models.py`, "iris").

tf2onnx needs TensorFlow, whose protobuf cannot live beside MediaPipe's, so this runs in an
environment of its own (the versions are the `convert` extra of pyproject.toml; the product
never imports either):

    python3.11 -m venv /tmp/conv && /tmp/conv/bin/pip install tf2onnx==1.17.0 \
        tensorflow-cpu==2.21.0 onnxruntime==1.32.0
    /tmp/conv/bin/python scripts/convert_models.py \
        --mediapipe-dir .venv/lib/python3.11/site-packages/mediapipe

Then it checks each ONNX model against the TFLite interpreter on random inputs and prints the
sha256 of each file for models/README.md. The conversion is deterministic: rerunning it with
the same versions gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ATTENTION = ("face_landmark/face_landmark_with_attention.tflite", "mp_face_landmark_attention.onnx")
# (file under mediapipe/modules, output name): the face models the product runs on ONNX
# Runtime (committed under models/), then the keypoint SR's pose and hand models (--body;
# run by keypoints/onnx_pose.py and keypoints/onnx_hands.py).
FACE_MODELS: tuple[tuple[str, str], ...] = (
    ("face_detection/face_detection_full_range_sparse.tflite", "mp_face_detection_full.onnx"),
    ("face_detection/face_detection_short_range.tflite", "mp_face_detection_short.onnx"),
    ("face_landmark/face_landmark.tflite", "mp_face_landmark.onnx"),
    ("iris_landmark/iris_landmark.tflite", "mp_iris_landmark.onnx"),
    ATTENTION,
)
BODY_MODELS: tuple[tuple[str, str], ...] = (
    ("pose_detection/pose_detection.tflite", "mp_pose_detection.onnx"),
    ("pose_landmark/pose_landmark_full.tflite", "mp_pose_landmark_full.onnx"),
    ("palm_detection/palm_detection_full.tflite", "mp_palm_detection_full.onnx"),
    ("hand_landmark/hand_landmark_full.tflite", "mp_hand_landmark_full.onnx"),
)
OPSET = 13
# Outputs left out of a converted model, by their number of values: pose_landmark_full's
# 256 x 256 segmentation mask, which the keypoint SR never uses (Pose(enable_segmentation=
# False) still computes it inside MediaPipe's graph). Without its decoder the model costs
# about 40 % less CPU per call on ONNX Runtime; the other outputs are unchanged (equal).
DROPPED_OUTPUTS: dict[str, tuple[int, ...]] = {"mp_pose_landmark_full.onnx": (256 * 256,)}
# Models whose PRelu become x + s*Relu(k*x) (_prelu_as_fused_relu, one pass fewer per PRelu on
# the CPU) besides the attention mesh: the palm detector runs on most frames of the keypoint
# stage and has 31 of them; face_landmark (23) and iris_landmark (53): about 10 % less CPU per
# call each. The other converted models have no PRelu (_prelu_as_relu, a*x + (1-a)*Relu(x),
# stays the default).
FUSED_PRELU = ("mp_palm_detection_full.onnx", "mp_face_landmark.onnx", "mp_iris_landmark.onnx")
# Largest difference between TFLite and ONNX Runtime outputs accepted, relative to the
# output's range (float32 kernels differ in summation order, nothing more).
MAX_RELATIVE_DIFF = 1e-3


def _mediapipe_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mediapipe is not importable here; pass --mediapipe-dir")
    return Path(list(spec.submodule_search_locations)[0])


DENSIFY = 124  # tflite BuiltinOperator.DENSIFY


def _dense_weights(src: Path) -> dict[bytes, object]:
    """Sparse constant's stored bytes -> its dense value, for each DENSIFY op of the model.

    face_detection_full_range_sparse stores some convolution weights sparse, expanded at
    load time by DENSIFY ops, which tf2onnx cannot read. The TFLite interpreter computes the
    dense values (its DENSIFY kernel); they go into the ONNX graph as plain constants.
    """
    import numpy as np
    import tensorflow as tf
    from tf2onnx.tflite.Model import Model

    model = Model.GetRootAsModel(src.read_bytes(), 0)
    graph = model.Subgraphs(0)
    sparse = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == DENSIFY:
            tensor = graph.Tensors(op.Inputs(0))
            stored = model.Buffers(tensor.Buffer()).DataAsNumpy().tobytes()
            sparse.append((stored, op.Outputs(0)))
    if not sparse:
        return {}
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = tf.lite.Interpreter(model_path=str(src), experimental_preserve_all_tensors=True,
                                      experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=np.float32))
    interpreter.invoke()
    return {stored: interpreter.get_tensor(index).copy() for stored, index in sparse}


def _register_densify_as_identity() -> None:
    from tf2onnx.handler import tfl_op

    @tfl_op("TFL_DENSIFY")
    class _Densify:  # its input is already dense (see _dense_weights)
        @classmethod
        def version_1(cls, ctx, node, **kwargs):  # noqa: ARG003 - tf2onnx's handler signature
            node.type = "Identity"


def convert(src: Path, dst: Path) -> None:
    import tf2onnx
    from tf2onnx import tflite_utils


    if src.name == Path(ATTENTION[0]).name:
        model, _ = tf2onnx.convert.from_tflite(
            str(src), opset=ATTENTION_OPSET, custom_ops=dict.fromkeys(_CUSTOM, "mediapipe"),
            shape_override={"input_1": [1, 192, 192, 3]})
        crops = [n.output[0] for n in model.graph.node
                 if n.op_type == "TFL_TransformTensorBilinear"]
        if replace_mediapipe_ops(model) != 11:
            raise SystemExit(f"{src}: expected 11 custom ops (3 matrices, 3 crops, 5 point sets)")
        _finish(model, dst, prelu=_prelu_as_fused_relu, twins=crops, blocked_residuals=True,
                channels_first=True)
        return
    dense = _dense_weights(src)
    make_ndarray = tflite_utils.tensor_util.MakeNdarray

    def read_constant(proto):
        found = dense.get(proto.tensor_content)
        return found if found is not None else make_ndarray(proto)

    tflite_utils.tensor_util.MakeNdarray = read_constant
    try:
        model, _ = tf2onnx.convert.from_tflite(str(src), opset=OPSET)
    finally:
        tflite_utils.tensor_util.MakeNdarray = make_ndarray
    if dst.name in DROPPED_OUTPUTS:
        model = _drop_outputs(model, DROPPED_OUTPUTS[dst.name])
    # Names and docs carry the converter's version and the source path: cleared so that
    # the file depends only on the weights and the graph.
    _finish(model, dst, prelu=_prelu_as_fused_relu if dst.name in FUSED_PRELU else None)


def _rewrite_prelus(model, expand, prune: bool) -> int:
    """Replace every PRelu whose slope is a constant by what `expand(tag, x, slope,
    slope_name, output)` returns: the (name, array) constants it adds and its nodes.
    `prune`: drop the constants no node reads any more."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    slopes = {t.name: t for t in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in slopes:
            nodes.append(node)
            continue
        count += 1
        x, a = node.input
        slope = numpy_helper.to_array(slopes[a]).astype(np.float32)
        constants, made = expand(f"{node.name}__prelu", x, slope, a, node.output[0])
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants)
        nodes += made
    del graph.node[:]
    graph.node.extend(nodes)
    if prune:
        # The slopes themselves (and any other constant no node reads) are dropped: left in,
        # their converter-made names would order them differently from run to run
        # (see _canonical_names).
        used = {name for node in graph.node for name in node.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return count


def _prelu_as_relu(model) -> int:
    """Rewrite PRelu(x, a) as a*x + (1-a)*Relu(x), the same function.

    onnxruntime's CPU kernels run convolutions in a blocked channel layout (NCHWc) and have no
    PRelu for it, so every PRelu of these networks (one after most convolutions) was wrapped in
    two layout conversions; Relu, Mul by a per-channel constant and Add stay in the blocked
    layout. face_landmark: 16.9 -> 9.3 ms per call on one AVX2 core, outputs equal to 3e-5 px.
    """
    from onnx import helper

    def expand(tag, x, slope, a, out):
        return [(f"{tag}_1ma", 1.0 - slope)], [
            helper.make_node("Mul", [x, a], [f"{tag}_ax"], name=f"{tag}_mul"),
            helper.make_node("Relu", [x], [f"{tag}_relu"], name=f"{tag}_relu"),
            helper.make_node("Mul", [f"{tag}_relu", f"{tag}_1ma"], [f"{tag}_rest"],
                             name=f"{tag}_mul2"),
            helper.make_node("Add", [f"{tag}_ax", f"{tag}_rest"], [out], name=f"{tag}_add")]

    return _rewrite_prelus(model, expand, prune=False)


def _prelu_as_fused_relu(model) -> int:
    """Rewrite PRelu(x, a) as x + s*Relu(k*x), the same function with s = 1, k = a - 1
    where a <= 1 and s = -1, k = 1 - a where a > 1 (the slopes here are 0.5 to 6.2).

    One pass fewer than _prelu_as_relu: onnxruntime's blocked CPU layout runs k*x as a 1x1
    depthwise convolution with the Relu fused into it, and s*t + x as one with the sum
    fused. The attention mesh (73 PRelu, most on 16 x 16 eye and lip features, where the
    cost is per node): 606 -> 539 nodes after onnxruntime's optimisation, about 6 % less time.
    """
    import numpy as np
    from onnx import helper

    def expand(tag, x, slope, a, out):
        return [(f"{tag}_k", np.where(slope <= 1, slope - 1, 1 - slope).astype(np.float32)),
                (f"{tag}_s", np.where(slope <= 1, 1.0, -1.0).astype(np.float32))], [
            helper.make_node("Mul", [x, f"{tag}_k"], [f"{tag}_kx"], name=f"{tag}_mul"),
            helper.make_node("Relu", [f"{tag}_kx"], [f"{tag}_relu"], name=f"{tag}_relu"),
            helper.make_node("Mul", [f"{tag}_relu", f"{tag}_s"], [f"{tag}_rest"],
                             name=f"{tag}_mul2"),
            helper.make_node("Add", [f"{tag}_rest", x], [out], name=f"{tag}_add")]

    return _rewrite_prelus(model, expand, prune=True)


def _channel_pad_as_conv(model) -> int:
    """Rewrite a zero Pad along the channels (the residual branch of a block that widens)
    as a 1x1 convolution with an identity kernel, the same values: onnxruntime keeps a
    convolution in its blocked CPU layout, a Pad it converts out of and back into
    (attention mesh: about 10 % less time per call)."""
    import numpy as np
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    inferred = shape_inference.infer_shapes(model)
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value
                for v in list(inferred.graph.value_info) + list(inferred.graph.input)
                if len(v.type.tensor_type.shape.dim) == 4}
    nodes, count = [], 0
    for node in graph.node:
        pads = numpy_helper.to_array(consts[node.input[1]]).tolist() \
            if node.op_type == "Pad" and node.input[1] in consts else None
        mode = [helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"]
        plain = (not mode or mode[0] == b"constant") and (len(node.input) < 3 or not node.input[2])
        c = channels.get(node.input[0], 0)
        if not (pads and len(pads) == 8 and plain and c and pads[5] > 0
                and all(v == 0 for i, v in enumerate(pads) if i != 5)):
            nodes.append(node)
            continue
        count += 1
        kernel = np.zeros((c + pads[5], c, 1, 1), np.float32)
        kernel[np.arange(c), np.arange(c), 0, 0] = 1.0
        name = f"{node.name}__padconv"
        graph.initializer.append(numpy_helper.from_array(kernel, f"{name}_w"))
        nodes.append(helper.make_node("Conv", [node.input[0], f"{name}_w"], [node.output[0]],
                                      name=name, kernel_shape=[1, 1]))
    del graph.node[:]
    graph.node.extend(nodes)
    return count


_MERGEABLE = ("Conv", "Mul", "Add", "Relu", "MaxPool")


def _merge_twin_branches(model, starts: list[str]) -> None:
    """Run two branches of the same shape with different weights as one, side by side along
    the channels: grouped convolutions (group doubled, weights stacked), per-channel
    constants concatenated, the inputs concatenated once and the outputs split where
    anything else reads them.

    The attention mesh's left- and right-eye networks (on the 16 x 16 crops `starts` name)
    are such twins: each is about 70 small nodes after onnxruntime's optimisation, where the
    cost is per node; as one they take about 10 % less time per call. Each group sums the
    same products as before (outputs equal to 2e-5 px).
    """
    import collections

    import numpy as np
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    inferred = shape_inference.infer_shapes(model)
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value
                for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    consts = {t.name: t for t in graph.initializer}
    readers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)

    def entry(start: str) -> str:
        # tf2onnx turns each NHWC crop channel-first before its first convolution
        [node] = readers[start]
        if node.op_type != "Transpose":
            raise SystemExit(f"{start}: expected one Transpose to read it, got {node.op_type}")
        return node.output[0]

    def branch(tensor: str) -> list:
        found, todo = set(), [tensor]
        while todo:
            for node in readers.get(todo.pop(), []):
                if node.op_type in _MERGEABLE and node.name not in found:
                    found.add(node.name)
                    todo.extend(node.output)
        return [node for node in graph.node if node.name in found]

    def signature(nodes: list) -> list:
        return [(n.op_type, [tuple(consts[i].dims) if i in consts else None for i in n.input],
                 sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute))
                for n in nodes]

    branches = {start: branch(entry(start)) for start in starts}
    twins = [(a, b) for i, a in enumerate(starts) for b in starts[i + 1:]
             if branches[a] and signature(branches[a]) == signature(branches[b])]
    if len(twins) != 1:
        raise SystemExit(f"expected one pair of twin branches among {starts}, got {twins}")
    first, second = twins[0]
    counterpart = {entry(first): entry(second)}
    merged = {entry(first): f"{first}__twins"}
    nodes = [helper.make_node("Concat", [entry(first), entry(second)], [merged[entry(first)]],
                              name=f"{first}__twins_in", axis=1)]
    inits, stacked = [], {}    # (constant of first, of second) -> their stack, made once
    for a, b in zip(branches[first], branches[second], strict=True):
        inputs = []
        for x, y in zip(a.input, b.input, strict=True):
            if x in merged:
                if counterpart[x] != y:
                    raise SystemExit(f"{a.name}, {b.name}: branches wired differently")
                inputs.append(merged[x])
            elif (x, y) in stacked:
                inputs.append(stacked[x, y])
            elif x in consts and y in consts:
                wx, wy = numpy_helper.to_array(consts[x]), numpy_helper.to_array(consts[y])
                # conv weights and biases stack on their first axis; a per-channel constant
                # ([1, C, 1, 1]) on the channels; a scalar is shared
                axis = 0 if a.op_type == "Conv" or wx.ndim < 4 else 1
                if wx.size == 1 and a.op_type != "Conv":
                    if not np.array_equal(wx, wy):
                        raise SystemExit(f"{a.name}, {b.name}: scalars differ")
                    value = wx
                else:
                    value = np.concatenate([wx, wy], axis=axis)
                stacked[x, y] = f"{x}__{y}__twins"
                inputs.append(stacked[x, y])
                inits.append(numpy_helper.from_array(value, stacked[x, y]))
            elif not x and not y:
                inputs.append("")
            else:
                raise SystemExit(f"{a.name}: input {x} is neither in the branch nor constant")
        attrs = {at.name: helper.get_attribute_value(at) for at in a.attribute}
        if a.op_type == "Conv":
            attrs["group"] = 2 * int(attrs.get("group", 1))
        for x, y in zip(a.output, b.output, strict=True):
            counterpart[x], merged[x] = y, f"{x}__twins"
        nodes.append(helper.make_node(a.op_type, inputs, [merged[x] for x in a.output],
                                      name=f"{a.name}__twins", **attrs))
    gone = {n.name for n in branches[first] + branches[second]}
    outputs = {o.name for o in graph.output}
    for x in [x for x in merged if x != entry(first)]:
        y = counterpart[x]
        if any(n.name not in gone for n in readers[x] + readers[y]) or {x, y} & outputs:
            sizes = f"{x}__twins_sizes"
            inits.append(numpy_helper.from_array(
                np.array([channels[x], channels[y]], dtype=np.int64), sizes))
            nodes.append(helper.make_node("Split", [merged[x], sizes], [x, y],
                                          name=f"{x}__twins_split", axis=1))
    kept = [n for n in graph.node if n.name not in gone] + nodes
    graph.initializer.extend(inits)
    used = {name for node in kept for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    del graph.node[:]
    graph.node.extend(_topological(kept, {i.name for i in graph.input} |
                                   {t.name for t in graph.initializer}))


def _residuals_through_identity(model) -> int:
    """Let each Add that sums a tensor made by a Transpose or a Concat (the cropped
    features entering the eye and lip networks of the attention mesh, where the first
    block's residual is the crop itself) read it through a depthwise 1x1 convolution of
    weight 1: the same values. onnxruntime keeps an Add in its blocked CPU layout only when
    both inputs are in it, which a convolution's output is and a Transpose's is not; so the
    first block of each network ran in plain NCHW, with layout conversions around it
    (attention mesh: 18 nodes fewer after onnxruntime's optimisation, 1-2 % less time)."""
    import numpy as np
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    made = {o: n.op_type for n in graph.node for o in n.output}
    inferred = shape_inference.infer_shapes(model)
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value
                for v in inferred.graph.value_info if len(v.type.tensor_type.shape.dim) == 4}
    identities: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        if node.op_type == "Add":
            for i, name in enumerate(node.input):
                if made.get(name) not in ("Transpose", "Concat") or not channels.get(name):
                    continue
                if name not in identities:
                    identities[name] = f"{name}__identity"
                    c = channels[name]
                    graph.initializer.append(numpy_helper.from_array(
                        np.ones((c, 1, 1, 1), np.float32), f"{name}__identity_w"))
                    nodes.append(helper.make_node(
                        "Conv", [name, f"{name}__identity_w"], [identities[name]],
                        name=f"{name}__identity", kernel_shape=[1, 1], group=c))
                node.input[i] = identities[name]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(_topological(nodes, {i.name for i in graph.input} |
                                   {t.name for t in graph.initializer}))
    return sum(1 for n in graph.node for name in n.input if name in identities.values())


def _input_channels_first(model) -> None:
    """Take the image input as NCHW ([1, 3, H, W]) instead of TFLite's NHWC: the Transpose
    tf2onnx puts first is dropped (on one CPU core it cost about as much as making the
    tensor; faces/mp_geometry.image_tensor makes the NCHW one for the same price)."""
    graph = model.graph
    source = graph.input[0].name
    [first] = [n for n in graph.node if n.op_type == "Transpose" and n.input[0] == source]
    perm = [a.ints for a in first.attribute if a.name == "perm"]
    if not perm or list(perm[0]) != [0, 3, 1, 2]:
        raise SystemExit(f"{first.name}: expected the NHWC -> NCHW transpose of the input")
    for node in graph.node:
        node.input[:] = [source if n == first.output[0] else n for n in node.input]
    graph.node.remove(first)
    dims = graph.input[0].type.tensor_type.shape.dim
    n, h, w, c = (d.dim_value for d in dims)
    for dim, value in zip(dims, (n, c, h, w), strict=True):
        dim.dim_value = value


def _topological(nodes: list, available: set[str]) -> list:
    """The nodes in an order where each comes after what it reads, otherwise as given."""
    ready, ordered, waiting = set(available) | {""}, [], list(nodes)
    while waiting:
        later = []
        for node in waiting:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                later.append(node)
        if len(later) == len(waiting):
            raise SystemExit("the graph has a cycle")
        waiting = later
    return ordered


def _drop_outputs(model, sizes: tuple[int, ...]):
    """The model without the outputs of these sizes and the nodes only they need."""
    import math

    import onnx

    def size(value_info) -> int:
        return math.prod(d.dim_value for d in value_info.type.tensor_type.shape.dim)

    keep = [o.name for o in model.graph.output if size(o) not in sizes]
    if len(keep) == len(model.graph.output):
        raise SystemExit(f"no output of {sizes} values to drop")
    extractor = onnx.utils.Extractor(model)
    pruned = extractor.extract_model([i.name for i in model.graph.input], keep)
    del pruned.opset_import[:]
    pruned.opset_import.extend(model.opset_import)
    pruned.ir_version = model.ir_version
    return pruned


def _finish(model, dst: Path, prelu=None, twins: list[str] | None = None,
            blocked_residuals: bool = False, channels_first: bool = False) -> None:
    (prelu or _prelu_as_relu)(model)
    _channel_pad_as_conv(model)
    if twins:
        _merge_twin_branches(model, twins)
    if blocked_residuals and _residuals_through_identity(model) != 2:
        raise SystemExit("expected two residual sums on the crop features (eyes, lips)")
    if channels_first:
        _input_channels_first(model)
    model.producer_version = ""
    model.doc_string = ""
    model.graph.doc_string = ""
    del model.metadata_props[:]
    _canonical_names(model)
    dst.write_bytes(model.SerializeToString())


def _canonical_names(model) -> None:
    """Rename every node, intermediate tensor and initializer by its place in the graph.

    tf2onnx numbers the names it makes with a process-wide counter whose value at each model
    varies from run to run, and orders initializers by it; the graph itself does not vary.
    Graph inputs and outputs keep their names (the runtime feeds and reads them by name).
    """
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    initializers = {t.name: t for t in graph.initializer}
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = f"{'w' if name in initializers else 't'}{len(names)}"
        return names[name]

    for index, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{index}"
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    ordered = sorted(graph.initializer, key=lambda t: int(t.name[1:]) if t.name[1:].isdigit()
                     else -1)
    copies = [type(t)() for t in ordered]
    for copy, tensor in zip(copies, ordered, strict=True):
        copy.CopyFrom(tensor)
    del graph.initializer[:]
    graph.initializer.extend(copies)
    del graph.value_info[:]


# -- the attention mesh's three custom ops, as standard ONNX ------------------------------
# face_landmark_with_attention.tflite crops its eye and lip features with three MediaPipe
# TFLite custom ops (mediapipe/util/tflite/operations, v2 kernels). tf2onnx passes them
# through as nodes of a "mediapipe" domain; they are replaced here by the same arithmetic in
# standard ONNX operators (a Gather of the four neighbours for the bilinear crop; the three
# matrices and three crops as one batch of three, _batched_crops), for one image.
ATTENTION_OPSET = 16   # the opset this model was first converted at (GridSample); kept
_CUSTOM = ("TFL_Landmarks2TransformMatrix", "TFL_TransformTensorBilinear", "TFL_TransformLandmarks")


class _Builder:
    """Appends nodes and constants under one name prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.inits, self.count = prefix, [], [], 0

    def name(self) -> str:
        self.count += 1
        return f"{self.prefix}_{self.count}"

    def const(self, value) -> str:
        import numpy as np
        from onnx import numpy_helper

        name = self.name()
        array = np.asarray(value)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self.name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(),
                                           **attrs))
        return out


def _affine(b: _Builder, matrix: str) -> str:
    """[1, 4, 2]: the first two rows of a [1, 4, 4] matrix, transposed, so that a row
    (x, y, 0, 1) times it is the matrix's image of (x, y)."""
    rows = b.op("Slice", matrix, b.const([0]), b.const([2]), b.const([1]))
    return b.op("Transpose", rows, perm=[0, 2, 1])


def _transform_landmarks(b: _Builder, points: str, affine: str, out: str) -> None:
    """TransformLandmarks v2: [1, N, 2] points through the matrix's affine part."""
    linear = b.op("Slice", affine, b.const([0]), b.const([2]), b.const([1]))
    offset = b.op("Slice", affine, b.const([3]), b.const([4]), b.const([1]))
    b.op("Add", b.op("MatMul", points, linear), offset, out=out)


def _batched_crops(b: _Builder, landmarks: str, features: str, matrices: list, crops: list,
                   size: tuple[int, int]) -> None:
    """Landmarks2TransformMatrix and TransformTensorBilinear (v2 kernels) of the attention
    mesh, all 3 of each (same sizes and scales) as one batch of 3, then one Split each into the
    original tensors (the point transforms and the eye and lip networks read them).

    Matrix: 4x4, taking output pixels (x, y) of an output_width x output_height crop to
    input coordinates, the crop turned by the line left -> right landmark and sized scale x
    the box of the subset landmarks. Crop: NHWC features sampled bilinearly at the matrix's
    image of each output pixel (+0.5 pixel alignment), zero where that falls outside the
    input; the four neighbours of each sample gathered from the flattened features and mixed
    by one small matrix product (onnxruntime's GridSample took about 0.3 ms per 16 x 16 x 32
    crop on one CPU core). Written with small matrix products on [n, ...] tensors, not
    scalar by scalar and not crop by crop: onnxruntime's cost here is per node (about 4.6 us
    each on one core), about 45 nodes instead of about 130 (i21mesh6: 5-8 % less CPU for the
    model, outputs bit-identical).

    Every listed landmark counts (the eyes list 71, the lips 80): checked against MediaPipe's
    own output (dropping the eyes' odd last index moves their points by up to 2 % of the
    inter-ocular distance). The subsets are padded to one length by repeating their first
    landmark, which changes no box. The crops are made in the matrices' order and each is
    named back after the crop node that reads that matrix."""
    import math

    import numpy as np
    from onnx import helper

    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in matrices]
    shared = ("output_width", "output_height", "scale_x", "scale_y", "target_rotation_radians")
    if any(tuple(a.get(k) for k in shared) != tuple(attrs[0].get(k) for k in shared)
           for a in attrs):
        raise SystemExit("the attention mesh's crops differ in size or scale")
    n = len(matrices)
    ow, oh = float(attrs[0]["output_width"]), float(attrs[0]["output_height"])
    target = float(attrs[0].get("target_rotation_radians", 0.0))
    subsets = [list(a["subset_idxs"]) for a in attrs]
    longest = max(len(x) for x in subsets)
    padded = [x + [x[0]] * (longest - len(x)) for x in subsets]
    xy = b.op("Reshape", b.op("Slice", landmarks, b.const([0]), b.const([2]), b.const([2])),
              b.const([-1, 2]))                                            # (468, 2)
    ends = b.op("Gather", xy, b.const([[int(a["left_rotation_idx"]), int(a["right_rotation_idx"])]
                                       for a in attrs]), axis=0)           # (n, 2, 2)
    d = b.op("MatMul", b.const([[-1.0, 1.0]]), ends)                       # (n, 1, 2)
    unit = b.op("LpNormalization", d, axis=-1, p=2)
    ct, st = math.cos(target), math.sin(target)
    # rotation r = target - a: (cos r, sin r) = (cos a, sin a) @ [[ct, st], [st, -ct]]
    cs = b.op("MatMul", unit, b.const([[ct, st], [st, -ct]]))
    # rot = [[c, s], [-s, c]]: a row vector p times it is R(r) p
    rot = b.op("Reshape", b.op("MatMul", cs, b.const([[1.0, 0.0, 0.0, 1.0],
                                                       [0.0, 1.0, -1.0, 0.0]])),
               b.const([n, 2, 2]))
    back = b.op("Transpose", rot, perm=[0, 2, 1])                          # R(-r)
    turned = b.op("MatMul", b.op("Gather", xy, b.const(padded), axis=0), rot)   # (n, K, 2)
    lo = b.op("ReduceMin", turned, axes=[1], keepdims=1)
    hi = b.op("ReduceMax", turned, axes=[1], keepdims=1)
    centre = b.op("MatMul", b.op("Mul", b.op("Add", lo, hi), b.const(0.5)), back)
    scale = b.op("Mul", b.op("Sub", hi, lo),
                 b.const([[[float(attrs[0]["scale_x"]) / ow, float(attrs[0]["scale_y"]) / oh]]]))
    linear = b.op("Mul", rot, scale)
    offset = b.op("Sub", centre, b.op("MatMul", b.const([[[ow / 2, oh / 2]]]),
                                      b.op("Transpose", linear, perm=[0, 2, 1])))
    top = b.op("Concat", linear, b.const(np.zeros((n, 2, 1))),
               b.op("Transpose", offset, perm=[0, 2, 1]), axis=2)         # (n, 2, 4)
    matrix = b.op("Concat", top, b.const(np.tile([[[0.0, 0.0, 1.0, 0.0],
                                                   [0.0, 0.0, 0.0, 1.0]]], (n, 1, 1))), axis=1)
    b.nodes.append(helper.make_node("Split", [matrix, b.const([1] * n)],
                                    [m.output[0] for m in matrices], name=b.name(), axis=0))
    # the crops: align corners, output pixel p samples input pixel T(p + 0.5) - 0.5
    affine = b.op("Transpose", b.op("Slice", matrix, b.const([0]), b.const([2]), b.const([1])),
                  perm=[0, 2, 1])                                          # (n, 4, 2)
    in_h, in_w = size
    ys, xs = np.meshgrid(np.arange(int(oh), dtype=np.float32),
                         np.arange(int(ow), dtype=np.float32), indexing="ij")
    count = int(oh) * int(ow)
    grid = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5, np.zeros(count, np.float32),
                     np.ones(count, np.float32)], axis=1)[None]
    at = b.op("Add", b.op("MatMul", b.const(grid), affine), b.const(-0.5))  # (n, oh*ow, 2)
    inside = b.op("Min", b.op("Max", at, b.const(0.0)), b.const([[[in_w - 1.0, in_h - 1.0]]]))
    # 1 where the sample lies in the input (not moved by the clamp), 0 outside
    keep = b.op("ReduceMin", b.op("Cast", b.op("Equal", inside, at), to=1), axes=[2],
                keepdims=1)
    # Top-left neighbour at most one short of the last row and column: its fraction is
    # then 1 on the last one, and all four neighbours lie in the input.
    corner = b.op("Min", b.op("Floor", inside), b.const([[[in_w - 2.0, in_h - 2.0]]]))
    frac = b.op("Sub", inside, corner)                                   # fx, fy in 0..1
    first = b.op("MatMul", corner, b.const([[1.0], [float(in_w)]]))      # y * W + x
    index = b.op("Cast", b.op("Add", first, b.const([[[0.0, 1.0, in_w, in_w + 1.0]]])), to=7)
    # weights of the four neighbours: (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy
    wx = b.op("Add", b.op("MatMul", frac, b.const([[-1.0, 1.0, -1.0, 1.0], [0.0] * 4])),
              b.const([[[1.0, 0.0, 1.0, 0.0]]]))
    wy = b.op("Add", b.op("MatMul", frac, b.const([[0.0] * 4, [-1.0, -1.0, 1.0, 1.0]])),
              b.const([[[1.0, 1.0, 0.0, 0.0]]]))
    weights = b.op("Mul", b.op("Mul", wx, wy), keep)
    flat = b.op("Reshape", features, b.const([in_h * in_w, -1]))
    near = b.op("Gather", flat, index, axis=0)                            # (n, oh*ow, 4, C)
    mixed = b.op("MatMul", b.op("Unsqueeze", weights, b.const([2])), near)
    out = b.op("Reshape", mixed, b.const([n, int(oh), int(ow), -1]))
    by_matrix = {m.output[0]: i for i, m in enumerate(matrices)}
    names = [""] * n
    for crop in crops:
        names[by_matrix[crop.input[1]]] = crop.output[0]
    b.nodes.append(helper.make_node("Split", [out, b.const([1] * n)], names, name=b.name(),
                                    axis=0))


def replace_mediapipe_ops(model) -> int:
    """Replace the custom nodes of a tf2onnx graph by standard ops; how many were replaced."""
    from onnx import helper, shape_inference

    graph = model.graph
    shapes = {}
    if not any(o.domain == "mediapipe" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("mediapipe", 1))
    inferred = shape_inference.infer_shapes(model)
    for v in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        shapes[v.name] = dims
    kept, replaced = [], 0
    affines: dict[str, str] = {}   # matrix -> its affine part, made once for all its users
    matrices = [n for n in graph.node if n.op_type == "TFL_Landmarks2TransformMatrix"]
    crops = [n for n in graph.node if n.op_type == "TFL_TransformTensorBilinear"]
    for node in graph.node:
        if node.op_type not in _CUSTOM:
            kept.append(node)
            continue
        if node.op_type != "TFL_TransformLandmarks":
            if node is matrices[0]:
                [features] = {c.input[0] for c in crops}
                [landmarks] = {m.input[0] for m in matrices}
                dims = shapes.get(features)
                if not dims or len(dims) != 4 or not all(dims[1:3]):
                    raise SystemExit(f"{features}: unknown feature shape {dims}")
                b = _Builder(f"{node.name}__mp")
                _batched_crops(b, landmarks, features, matrices, crops, (dims[1], dims[2]))
                kept.extend(b.nodes)
                graph.initializer.extend(b.inits)
            replaced += 1
            continue
        b = _Builder(f"{node.name}__mp")
        if node.input[1] not in affines:
            affines[node.input[1]] = _affine(b, node.input[1])
        _transform_landmarks(b, node.input[0], affines[node.input[1]], node.output[0])
        kept.extend(b.nodes)
        graph.initializer.extend(b.inits)
        replaced += 1
    del graph.node[:]
    graph.node.extend(_topological(kept, {i.name for i in graph.input} |
                                   {t.name for t in graph.initializer}))
    kept_opsets = [o for o in model.opset_import if o.domain != "mediapipe"]
    del model.opset_import[:]
    model.opset_import.extend(kept_opsets)
    return replaced


def check(src: Path, dst: Path) -> float:
    """Largest output difference, relative to each output's range, on two random inputs."""
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(src))
    interpreter.allocate_tensors()
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    tfl_inputs = interpreter.get_input_details()
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(2):
        feeds = {}
        for detail, onnx_input in zip(tfl_inputs, session.get_inputs(), strict=True):
            x = rng.uniform(0, 1, detail["shape"]).astype(np.float32)
            interpreter.set_tensor(detail["index"], x)
            feeds[onnx_input.name] = x
        interpreter.invoke()
        ours = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds),
                        strict=True))
        for detail in interpreter.get_output_details():
            ref = interpreter.get_tensor(detail["index"])
            if ref.size in DROPPED_OUTPUTS.get(dst.name, ()):
                continue
            got = _match(ours, detail["name"], ref.shape)
            span = float(ref.max() - ref.min()) or 1.0
            worst = max(worst, float(np.abs(got.reshape(ref.shape) - ref).max()) / span)
    return worst


def _match(outputs: dict, name: str, shape: tuple) -> object:
    import numpy as np

    if name in outputs:
        return outputs[name]
    same = [v for v in outputs.values() if v.size == int(np.prod(shape))]
    if len(same) != 1:
        raise SystemExit(f"cannot match TFLite output {name} to an ONNX output")
    return same[0]


def main() -> int:
    if os.environ.get("PYTHONHASHSEED") != "0":
        # tf2onnx names nodes and orders initializers by set and dict iteration: with string
        # hashing randomised, two runs give different (equivalent) files.
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "PYTHONHASHSEED": "0"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mediapipe-dir", help="the installed mediapipe package folder")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "models"))
    parser.add_argument("--no-check", action="store_true")
    parser.add_argument("--body", action="store_true", help="also the pose and hand models")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="convert only these outputs (e.g. mp_pose_detection.onnx)")
    args = parser.parse_args()
    modules = _mediapipe_dir(args.mediapipe_dir) / "modules"
    out = Path(args.out)
    selected = [(rel, name) for rel, name in FACE_MODELS + (BODY_MODELS if args.body else ())
                if not args.only or name in args.only]
    if len(selected) > 1:
        # tf2onnx and TensorFlow keep naming state between conversions (tf2onnx's node
        # counter and more), so a model's bytes depended on the models the same process had
        # converted before it: a full run gave other attention and pose files than `--only`
        # runs. Each model is converted by a process of its own.
        for _, name in selected:
            command = [sys.executable, __file__, "--mediapipe-dir", str(modules.parent),
                       "--out", str(out), "--body", "--only", name]
            if args.no_check:
                command.append("--no-check")
            if subprocess.run(command, check=False).returncode:
                return 1
        return 0
    _register_densify_as_identity()
    for rel, name in selected:
        src = modules / rel
        if not src.is_file():
            sys.exit(f"{src}: not found (is this the mediapipe 0.10.21 wheel?)")
        dst = out / name
        convert(src, dst)
        digest = hashlib.sha256(dst.read_bytes()).hexdigest()
        line = f"{name}  {dst.stat().st_size} bytes  sha256 {digest}"
        # The TFLite interpreter cannot run the attention mesh (its custom ops are MediaPipe's):
        # tests/faces/test_onnx_models.py compares it with MediaPipe's FaceMesh instead.
        if not args.no_check and (rel, name) != ATTENTION:
            diff = check(src, dst)
            line += f"  max diff {diff:.2e} of range"
            if diff > MAX_RELATIVE_DIFF:
                print(line)
                sys.exit(f"{name}: ONNX output differs from TFLite by {diff:.2e} of its range")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
