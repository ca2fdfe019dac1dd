"""Fold exporter leftovers into the layer before them, before anything is differentiated.

Caffe2, TensorFlow and Paddle exports keep inference-mode BatchNormalization (and per-channel
Mul/Add by constants) after their convolutions. onnxruntime would fold them into the conv
for the forward pass, but in an explain model the backward pass reads the conv's output, so
they stay: an unfused BatchNormalization forward, a per-channel Mul backward, and layout
reorders around both. Folded here, the forward part is the graph onnxruntime would have
optimised anyway, and the backward of the folded conv is one conv.

A fold rewrites `y = affine(layer(x))` as `y = layer'(x)`: per output channel o,
`W'[o] = W[o]·s[o]` and `b'[o] = b[o]·s[o] + t[o]`, computed in float64 and cast once, so
the outputs move only by float rounding. It is done only where it is exact and safe:
the layer's output feeds only the affine and is no graph output nor explained endpoint
(`keep`), and weights, bias and the affine's operands are constants.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .fold_shapes import fold_shape_arithmetic

_LAYERS = ("Conv", "ConvTranspose", "Gemm")


@dataclass
class _Folded:
    """A layer being folded into: y' = gain·(its weight's product) + bias, per output channel.

    Chained folds (BatchNorm, then Mul, then Add) only update `gain` and `bias` in float64;
    the weight is scaled once, at the end, straight from its stored values.
    """

    node: onnx.NodeProto
    weight: np.ndarray  # as stored
    gain: np.ndarray  # float64, one per output channel
    bias: np.ndarray  # float64, one per output channel
    channels: int
    rank: int  # the rank of the layer's output


def fold(model: onnx.ModelProto, keep: Collection[str] = ()) -> onnx.ModelProto:
    """The fold pass: `model` with shape arithmetic over static sizes folded to constants
    (fold_shapes.py), then BatchNormalization and per-channel affines folded into the
    Conv/ConvTranspose/Gemm before them (changed in place and returned).

    `keep` names tensors that must stay in the graph (the explained endpoints, a layer a
    method reads).
    """
    fold_shape_arithmetic(model, keep)
    graph = model.graph
    constants = _Constants(graph)
    uses = Counter(_used_names(graph))
    pinned = set(keep) | {o.name for o in graph.output} | _names_read_by_subgraphs(graph)
    producer: dict[str, onnx.NodeProto] = {}
    folded: dict[int, _Folded] = {}  # id(layer node) → its folded weights
    removed: list[onnx.NodeProto] = []
    vanished: set[str] = set()
    for node in graph.node:
        for out in node.output:
            producer[out] = node
        affine = _affine_of(node, constants) if node.domain in ("", "ai.onnx") else None
        if affine is None:
            continue
        x = affine.x
        layer = producer.get(x)
        if layer is None or layer.op_type not in _LAYERS or layer.domain not in ("", "ai.onnx"):
            continue
        if uses[x] != 1 or x in pinned:
            continue
        state = folded.get(id(layer)) or _open(layer, constants)
        if state is None:
            continue
        per_channel = _per_channel(affine, state)
        if per_channel is None:
            continue
        folded[id(layer)] = state
        _apply(state, *per_channel)
        layer.output[0] = node.output[0]
        producer[node.output[0]] = layer
        removed.append(node)
        vanished.add(x)
    if removed:
        _write_back(graph, list(folded.values()), removed, vanished, constants)
    return model


def _single_output(node: onnx.NodeProto) -> bool:
    return sum(1 for o in node.output if o) == 1


# ---------------------------------------------------------------- reading the graph


class _Constants:
    """Initializers that are not graph inputs, and Constant outputs, decoded on first use."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        inputs = {vi.name for vi in graph.input}
        self.initializers = {t.name: t for t in graph.initializer if t.name not in inputs}
        self.nodes = {
            n.output[0]: n
            for n in graph.node
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1
        }
        self._values: dict[str, np.ndarray | None] = {}

    def get(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name not in self._values:
            self._values[name] = self._decode(name)
        return self._values[name]

    def _decode(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.nodes.get(name)
        if node is None:
            return None
        value = [a for a in node.attribute if a.name == "value"]
        return numpy_helper.to_array(value[0].t) if value else None


def _used_names(graph: onnx.GraphProto) -> Iterator[str]:
    for node in graph.node:
        yield from (t for t in node.input if t)


def _names_read_by_subgraphs(graph: onnx.GraphProto) -> set[str]:
    """Every name a nested graph (If, Loop, Scan bodies) reads: those may be outer tensors."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                names.update(_used_names(sub))
                names |= _names_read_by_subgraphs(sub)
    return names


def _is_float(array: np.ndarray) -> bool:
    return array.dtype in (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class _Affine:
    """`scale·x + shift`. BatchNormalization's [C] vectors apply along axis 1 (`on_axis_1`);
    a Mul's or Add's constants broadcast as ONNX does, from the trailing axis."""

    x: str
    scale: np.ndarray
    shift: np.ndarray
    on_axis_1: bool = False


def _affine_of(node: onnx.NodeProto, constants: _Constants) -> _Affine | None:
    """`node` as an affine map of one computed input, when its other operands are constants."""
    if node.op_type == "BatchNormalization":
        return _batch_norm_affine(node, constants)
    if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2:
        return None
    a, b = node.input
    va, vb = constants.get(a), constants.get(b)
    if (va is None) == (vb is None):
        return None  # both computed (not an affine) or both constant (nothing to fold into)
    x, c, const_first = (b, va, True) if va is not None else (a, vb, False)
    assert c is not None
    if not _is_float(c):
        return None
    c64 = c.astype(np.float64)
    one, zero = np.ones_like(c64), np.zeros_like(c64)
    if node.op_type == "Mul":
        return _Affine(x, c64, zero)
    if node.op_type == "Add":
        return _Affine(x, one, c64)
    if node.op_type == "Sub":
        return _Affine(x, -one, c64) if const_first else _Affine(x, one, -c64)
    if const_first or not np.all(c64 != 0):
        return None  # c / x is not affine in x; x / 0 is left to the runtime
    return _Affine(x, 1.0 / c64, zero)


def _batch_norm_affine(node: onnx.NodeProto, constants: _Constants) -> _Affine | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("training_mode", 0) or not _single_output(node) or len(node.input) != 5:
        return None
    values = [constants.get(t) for t in node.input[1:]]
    if any(v is None or not _is_float(v) or v.ndim != 1 for v in values):
        return None
    scale, bias, mean, var = (v.astype(np.float64) for v in values)  # type: ignore[union-attr]
    gain = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    return _Affine(node.input[0], gain, bias - mean * gain, on_axis_1=True)


# ---------------------------------------------------------------- folding


def _open(layer: onnx.NodeProto, constants: _Constants) -> _Folded | None:
    """The layer's weight and bias in float64, or None when they are not constants."""
    if len(layer.input) < 2 or not _single_output(layer):
        return None
    weight = constants.get(layer.input[1])
    bias_name = layer.input[2] if len(layer.input) > 2 else ""
    bias = constants.get(bias_name) if bias_name else None
    if weight is None or not _is_float(weight) or (bias_name and bias is None):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in layer.attribute}
    if layer.op_type == "Gemm":
        if weight.ndim != 2:
            return None
        # Y = alpha·A·B + beta·C: alpha is the first gain, beta·C the first bias.
        channels = weight.shape[0] if attrs.get("transB", 0) else weight.shape[1]
        b64 = _column_bias(bias, channels)
        if b64 is None:
            return None
        gain = np.full(channels, float(attrs.get("alpha", 1.0)))
        return _Folded(layer, weight, gain, b64 * float(attrs.get("beta", 1.0)), channels, 2)
    if weight.ndim < 3:
        return None
    group = int(attrs.get("group", 1))
    channels = weight.shape[0] if layer.op_type == "Conv" else weight.shape[1] * group
    if bias is not None and bias.shape != (channels,):
        return None
    b64 = np.zeros(channels) if bias is None else bias.astype(np.float64)
    return _Folded(layer, weight, np.ones(channels), b64, channels, weight.ndim)


def _column_bias(bias: np.ndarray | None, channels: int) -> np.ndarray | None:
    """Gemm's C as one value per output column, or None when it varies along the rows."""
    if bias is None:
        return np.zeros(channels)
    if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
        return None
    if bias.size not in (1, channels):
        return None
    return np.broadcast_to(bias.astype(np.float64).reshape(-1), (channels,)).copy()


def _per_channel(affine: _Affine, state: _Folded) -> tuple[np.ndarray, np.ndarray] | None:
    """Scale and shift as [channels] vectors, or None unless both vary along axis 1 only."""
    vectors = []
    for value in (affine.scale, affine.shift):
        if affine.on_axis_1:
            if value.shape not in ((1,), (state.channels,)):
                return None
            vectors.append(np.broadcast_to(value, (state.channels,)))
            continue
        if value.ndim > state.rank:
            return None  # broadcasting would raise the output's rank
        shaped = value.reshape((1,) * (state.rank - value.ndim) + value.shape)
        others = [d for axis, d in enumerate(shaped.shape) if axis != 1]
        if any(d != 1 for d in others) or shaped.shape[1] not in (1, state.channels):
            return None
        vectors.append(np.broadcast_to(shaped.reshape(-1), (state.channels,)))
    return vectors[0], vectors[1]


def _apply(state: _Folded, scale: np.ndarray, shift: np.ndarray) -> None:
    """y' = scale·y + shift, per output channel."""
    state.gain = state.gain * scale
    state.bias = state.bias * scale + shift


def _scaled_weight(state: _Folded) -> np.ndarray:
    """The weight times the gain of its output channel, in float64, rounded once to its type."""
    layer, w = state.node, state.weight
    if layer.op_type == "Conv":
        view, gains = w, state.gain.reshape(-1, *([1] * (w.ndim - 1)))
    elif layer.op_type == "ConvTranspose":
        # Weight [C_in, C_out/group, k...]: output channel g·(C_out/group) + j is column j
        # of group g's rows.
        group = state.channels // w.shape[1]
        view = w.reshape(group, w.shape[0] // group, w.shape[1], *w.shape[2:])
        gains = state.gain.reshape(group, 1, w.shape[1], *([1] * (w.ndim - 2)))
    else:  # Gemm
        trans_b = any(a.name == "transB" and a.i for a in layer.attribute)
        view, gains = w, state.gain.reshape(-1, 1) if trans_b else state.gain.reshape(1, -1)
    # Computed in float64 and cast chunk by chunk: no float64 copy of the whole weight.
    out = np.empty(view.shape, dtype=w.dtype)
    np.multiply(view, gains, out=out, dtype=np.float64, casting="same_kind")
    return out.reshape(w.shape)


def _write_back(
    graph: onnx.GraphProto,
    layers: list[_Folded],
    removed: list[onnx.NodeProto],
    vanished: set[str],
    constants: _Constants,
) -> None:
    taken = {t for n in graph.node for t in (*n.input, *n.output)}
    taken |= {t.name for t in graph.initializer} | {v.name for v in graph.input}
    touched = {t for n in removed for t in n.input} | {t for s in layers for t in s.node.input[1:]}

    def fresh(base: str) -> str:
        name, i = f"{base}_folded", 1
        while name in taken:
            i += 1
            name = f"{base}_folded{i}"
        taken.add(name)
        return name

    for state in layers:
        layer = state.node
        has_bias = len(layer.input) > 2 and layer.input[2]
        bias = fresh(layer.input[2] if has_bias else f"{layer.input[1]}_bias")
        weight = fresh(layer.input[1])
        _add_initializer(graph, weight, _scaled_weight(state))
        _add_initializer(graph, bias, state.bias.astype(state.weight.dtype))
        layer.input[1] = weight
        if len(layer.input) > 2:  # a Conv's bias may be given as "" (absent)
            layer.input[2] = bias
        else:
            layer.input.append(bias)
        if layer.op_type == "Gemm":
            kept = [a for a in layer.attribute if a.name not in ("alpha", "beta")]
            del layer.attribute[:]
            layer.attribute.extend(kept)

    gone = {id(n) for n in removed}
    kept_nodes = [n for n in graph.node if id(n) not in gone]
    still_read = {t for n in kept_nodes for t in n.input} | {o.name for o in graph.output}
    still_read |= _names_read_by_subgraphs(graph)
    unused = {t for t in touched if t not in still_read}
    kept_nodes = [
        n
        for n in kept_nodes
        if not (
            n.op_type == "Constant" and n.output[0] in unused and n.output[0] in constants.nodes
        )
    ]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    # Deleted one by one: rebuilding the list would copy every weight of the model.
    for i in reversed(range(len(graph.initializer))):
        name = graph.initializer[i].name
        if name in unused and name in constants.initializers:
            del graph.initializer[i]
    kept_info = [vi for vi in graph.value_info if vi.name not in vanished]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def _add_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    # Filled in place: appending a made TensorProto would copy its bytes once more.
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    tensor.raw_data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
