"""Quantized models: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, and onnxruntime's com.microsoft DynamicQuantizeLSTM.

Rounding has no useful derivative, so these take the straight-through estimator that
quantization-aware training trains with (torch.fake_quantize_per_tensor_affine's backward):
round(·) counts as the identity, saturation does not. Each rule is the derivative of its
op with round replaced by the identity, and the gradient at an integer tensor is taken
with respect to its integer value (a real number, carried in the float type of the
gradient):

    QuantizeLinear       q = sat(round(x / s) + z)    dx = dq / s · [qmin <= round(x/s) + z <= qmax]
    DequantizeLinear     y = (q - z) · s              dq = dy · s
    MatMulInteger        y = (a - za) @ (b - zb)      da = dy @ (b - zb)ᵀ   (b a constant)
    ConvInteger          y = conv(x - zx, w - zw)     dx = conv's dx with weight w - zw

A QuantizeLinear → DequantizeLinear pair (the QDQ format of onnxruntime's quantize_static)
so passes dy where x quantizes inside [(qmin - z)·s, (qmax - z)·s] and 0 where it clips.
Scales and zero points get no gradient: QAT reads them from its observers, not through
them. walk.py lets the gradient through the integer outputs listed in INTEGER_CARRIERS.

DynamicQuantizeLSTM (what quantize_dynamic makes of an LSTM) is an LSTM whose two matrix
products quantize their float operand (X, then h at every step) to uint8 with a dynamic
range, as DynamicQuantizeLinear does, against int8/uint8 weights: by the same estimator it
is the float LSTM with the weights dequantized, differentiated at the float X and h (see
dynamic_quantize_lstm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ..builder import Builder, Node
from ..errors import RewriteError
from .common import float_mask, known_rank, upstream
from .conv import (
    conv_geometry,
    flipped_transposed_weight,
    same_pads_at_run_time,
    spatial_size,
    transposed_conv_cropped,
    transposed_conv_to_size,
)
from .recurrent import _DEFAULT_LSTM_ACTS, _direction_names, _refuse_unsupported, lstm
from .table import Grad, register

# Ops whose integer outputs (by index) carry a gradient: the quantized value, and products
# of quantized values. Every other integer tensor stops the walk.
INTEGER_CARRIERS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (0,),
    "DynamicQuantizeLinear": (0,),
    "MatMulInteger": (0,),
    "ConvInteger": (0,),
}

# The saturation range of each integer type a quantizer writes.
_RANGES: dict[int, tuple[int, int]] = {
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT16: (0, 65535),
    onnx.TensorProto.INT16: (-32768, 32767),
    onnx.TensorProto.UINT4: (0, 15),
    onnx.TensorProto.INT4: (-8, 7),
}


def _range(g: Builder, node: Node) -> tuple[int, int]:
    elem = g.tensor(node.outputs[0]).elem_type
    if elem == 0 and not node.input(2):
        elem = onnx.TensorProto.UINT8  # no zero point, no output_dtype: uint8
    if elem not in _RANGES:
        name = onnx.TensorProto.DataType.Name(elem) if elem else "unknown"
        raise RewriteError(
            f"{node.op_type} {node.name!r}: quantizing to {name} has no gradient rule "
            "(supported: uint8, int8, uint16, int16, uint4, int4)"
        )
    return _RANGES[elem]


def _along_axis(g: Builder, node: Node, param: str, x: str) -> str:
    """A scale or zero point shaped to broadcast against `x`: a 1-D one (per-axis
    quantization) along the node's `axis`; a scalar as it is."""
    if node.attr("block_size", 0):
        raise RewriteError(
            f"{node.op_type} {node.name!r}: blocked quantization (block_size) has no gradient rule"
        )
    rank = g.tensor(param).rank
    if rank is None:
        raise RewriteError(f"{node.op_type} {node.name!r}: the rank of {param!r} is unknown")
    if rank == 0:
        return param
    x_rank = known_rank(g, node, x)
    axis = int(node.attr("axis", 1)) % x_rank
    shape = [1] * x_rank
    shape[axis] = -1
    return g.Reshape(param, g.ints(shape))


def _as_float(g: Builder, tensor: str, like: str) -> str:
    return g.Cast(tensor, to=int(onnx.helper.np_dtype_to_tensor_dtype(g.dtype_of(like))))


def _inside(
    g: Builder,
    x: str,
    scale: str,
    zero: str | None,
    bounds: tuple[int, int],
    node: Node | None = None,
) -> str:
    """[qmin <= round(x / scale) + zero <= qmax] as 0/1 in x's float type: where the
    quantizer does not saturate. With a constant scale and zero point (quantize_static's
    QDQ; `node` the QuantizeLinear they are read from, along its axis) the same set is x in
    [lo, hi] for thresholds found at convert time; otherwise (a computed scale) it is
    evaluated as written."""
    thresholds = _constant_thresholds(g, node, x, bounds) if node is not None else None
    if thresholds is not None:
        lo, hi = (g.const(t) for t in thresholds)
        return float_mask(g, g.And(g.GreaterOrEqual(x, lo), g.LessOrEqual(x, hi)), x)
    level = g.Round(g.Div(x, scale))
    if zero is not None:
        level = g.Add(level, _as_float(g, zero, x))
    low, high = (g.scalar_like(float(b), x) for b in bounds)
    inside = g.And(g.GreaterOrEqual(level, low), g.LessOrEqual(level, high))
    return float_mask(g, inside, x)


# Unsigned views of the float types whose values can be walked in order by their bits.
_BITS = {np.dtype(np.float16): np.uint16, np.dtype(np.float32): np.uint32,
         np.dtype(np.float64): np.uint64}  # fmt: skip


def _constant_thresholds(
    g: Builder, node: Node, x: str, bounds: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The least x with round(x/s) + z >= qmin and the greatest with round(x/s) + z <= qmax,
    per scale entry, in x's float type; None when the scale or zero point is computed.

    x ↦ round(fl(x / s)) + z is monotone in x, so each bound is one threshold, found by
    bisecting the float values in their bit order with the very division and rounding
    (IEEE, half to even) QuantizeLinear specifies: the mask is the Div-Round form's bit
    for bit. Two comparisons of x against constants replace Div, Round, Add, Cast and two
    comparisons, and OpenVINO's low-precision passes, which rewrote the Div-Round form of
    a QDQ model's explain graph into a different map (ResNet-18 int8: rel. L2 2.0 from
    onnxruntime, 4e-7 with those passes off), leave plain comparisons alone."""
    s = g.info.constant(node.inputs[1])
    z = g.info.constant(node.input(2)) if node.input(2) else np.zeros((), np.uint8)
    dtype = np.dtype(g.dtype_of(x))
    if s is None or z is None or dtype not in _BITS or s.dtype != dtype:
        return None
    if s.ndim == 1:  # per axis: shaped to broadcast along the node's axis of x
        rank = known_rank(g, node, x)
        shape = [1] * rank
        shape[int(node.attr("axis", 1)) % rank] = -1
        s, z = s.reshape(shape), np.reshape(z, shape) if np.ndim(z) else z
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), s.shape)
    lo = _first_key(s, z, dtype, lambda level: level >= bounds[0])
    hi = _first_key(s, z, dtype, lambda level: level > bounds[1]) - 1
    return _from_key(lo, dtype).reshape(s.shape), _from_key(hi, dtype).reshape(s.shape)


def _to_key(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    bits = v.astype(dtype).view(_BITS[dtype]).astype(np.int64)
    sign = 1 << (8 * dtype.itemsize - 1)
    return np.where(bits & sign, -(bits & (sign - 1)), bits)


def _from_key(key: np.ndarray, dtype: np.dtype) -> np.ndarray:
    sign = 1 << (8 * dtype.itemsize - 1)
    bits = np.where(key < 0, (-key) | sign, key).astype(_BITS[dtype])
    return bits.view(dtype)


def _first_key(s: np.ndarray, z: np.ndarray, dtype: np.dtype, test) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Per entry, the least key (float in bit order) whose level passes `test`, a test
    that is false at -inf and true at +inf and monotone in between."""
    top = _to_key(np.asarray(np.inf), dtype)
    low = np.full(s.shape, -top, np.int64)  # the test fails here
    high = np.full(s.shape, top, np.int64)  # and holds here
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while np.any(high - low > 1):
            mid = low + (high - low) // 2
            level = np.round(_from_key(mid, dtype) / s.astype(dtype)).astype(np.float64) + z
            ok = test(level)
            high, low = np.where(ok, mid, high), np.where(ok, low, mid)
    return high


@register("QuantizeLinear")
def quantize_linear(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    dq, x = upstream(node, dys), node.inputs[0]
    bounds = _range(g, node)
    scale = _along_axis(g, node, node.inputs[1], x)
    zero = _along_axis(g, node, node.input(2), x) if node.input(2) else None
    dx = g.Mul(g.Div(dq, scale), _inside(g, x, scale, zero, bounds, node))
    return [dx, None, None][: len(node.inputs)]


@register("DequantizeLinear")
def dequantize_linear(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    dy, q = upstream(node, dys), node.inputs[0]
    if node.attr("block_size", 0):
        _along_axis(g, node, node.inputs[1], q)  # raises: blocked
    rank = g.tensor(node.inputs[1]).rank
    if rank:  # per-axis: the scale along `axis` of q
        x_rank = known_rank(g, node, q)
        shape = [1] * x_rank
        shape[int(node.attr("axis", 1)) % x_rank] = -1
        scale = g.Reshape(node.inputs[1], g.ints(shape))
    else:
        scale = node.inputs[1]
    return [g.Mul(dy, scale), None, None][: len(node.inputs)]


@register("DynamicQuantizeLinear")
def dynamic_quantize_linear(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    """uint8, scale = (max(x, 0) - min(x, 0)) / 255: the gradient of y only (scale and zero
    point are the observer's). An all-zero x has scale 0; the smallest normal float
    stands in for it, so the gradient is 0 there rather than NaN."""
    dq, x = dys[0], node.inputs[0]
    if dq is None:
        return [None]
    scale, zero = node.outputs[1], node.outputs[2]
    tiny = g.scalar_like(float(np.finfo(g.dtype_of(x)).tiny), x)
    safe = g.Max(scale, tiny)
    return [g.Mul(g.Div(dq, safe), _inside(g, x, safe, zero, (0, 255)))]


@register("MatMulInteger")
def matmul_integer(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    """The gradient of the left operand, the right one a constant 2-D matrix (a weight,
    as onnxruntime's quantize_dynamic writes them)."""
    dy, b = upstream(node, dys), node.inputs[1]
    if len(wants) > 1 and wants[1]:
        raise RewriteError(
            f"MatMulInteger {node.name!r}: a computed right operand has no gradient rule"
        )
    weight = g.info.constant(b)
    if weight is None or weight.ndim != 2:
        raise RewriteError(
            f"MatMulInteger {node.name!r}: the right operand must be a constant 2-D matrix"
        )
    zero: np.ndarray | int = 0
    if node.input(3):
        zero_value = g.info.constant(node.input(3))
        if zero_value is None:
            raise RewriteError(f"MatMulInteger {node.name!r}: a computed zero point of b")
        zero = zero_value.astype(np.int64).reshape(1, -1) if zero_value.ndim else zero_value
    centred = (weight.astype(np.int64) - zero).astype(np.float32)
    # dy arrives in the float type its Cast gave it; the weight is exact in float32.
    return [g.MatMul(dy, g.const(centred.T, hint="w_integer_t")), None, None, None][
        : len(node.inputs)
    ]


@register("ConvInteger")
def conv_integer(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """The gradient of the data, the weight a constant (as onnxruntime's quantize_dynamic
    writes it) with a scalar or per-output-channel zero point. The data's own zero point
    is a shift: it leaves the gradient as it is."""
    dy, x, w = upstream(node, dys), node.inputs[0], node.inputs[1]
    if len(wants) > 1 and wants[1]:
        raise RewriteError(f"ConvInteger {node.name!r}: a computed weight has no gradient rule")
    weight = g.info.constant(w)
    if weight is None:
        raise RewriteError(f"ConvInteger {node.name!r}: the weight must be a constant")
    centred = weight.astype(np.int64)
    if node.input(3):
        zero = g.info.constant(node.input(3))
        if zero is None:
            raise RewriteError(f"ConvInteger {node.name!r}: a computed zero point of the weight")
        # A 1-D zero point is one per output channel (the weight's first axis).
        centred = centred - zero.astype(np.int64).reshape(-1, *([1] * (weight.ndim - 1)))
    # dy arrives in the float type its Cast gave it; the weight is exact in float32.
    kernel = centred.astype(np.float32)
    geo = conv_geometry(g, node, w, x, run_time_same=True)
    if geo.same_at_run_time:
        begin, _ = same_pads_at_run_time(g, geo, x)
        size = spatial_size(g, x, len(geo.kernel))
        dx = transposed_conv_cropped(g, dy, g.const(kernel, hint="w_integer"), geo, begin, size)
        return [dx, None, None, None][: len(node.inputs)]
    # As Conv's rule: at stride 1 the adjoint is a Conv with the flipped, transposed weight.
    pads_begin = [d * (k - 1) - p for d, k, p in zip(geo.dilations, geo.kernel, geo.pads_begin)]
    pads_end = [d * (k - 1) - p for d, k, p in zip(geo.dilations, geo.kernel, geo.pads_end)]
    if all(s == 1 for s in geo.strides) and min(pads_begin + pads_end) >= 0:
        adjoint = g.const(flipped_transposed_weight(kernel, geo.group), hint="w_integer_adjoint")
        dx = g.Conv(
            dy, adjoint, dilations=geo.dilations, group=geo.group, pads=pads_begin + pads_end
        )
    else:
        weight_name = g.const(kernel, hint="w_integer")
        dx = transposed_conv_to_size(g, dy, weight_name, geo, x, node.outputs[0])
    return [dx, None, None, None][: len(node.inputs)]


# DynamicQuantizeLSTM's inputs: X, W, R, B, sequence_lens, initial_h, initial_c, P as LSTM's
# (W and R integer and transposed), then each weight's scale and zero point.
_DQLSTM_QUANTIZED = {1: ("W", 8, 9), 2: ("R", 10, 11)}
_DQLSTM_ATTRS = frozenset(
    {"hidden_size", "direction", "activations", "clip", "input_forget", "activation_alpha",
     "activation_beta"}
)  # fmt: skip


@register("com.microsoft.DynamicQuantizeLSTM")
def dynamic_quantize_lstm(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    """onnxruntime's contrib LSTM with integer weights: the float LSTM's gradient with W and
    R dequantized at convert time, at the float X and h (the straight-through estimator).

    W is [D, input_size, 4H] and R [D, H, 4H] (LSTM's [D, 4H, ·] transposed), int8 or
    uint8, gates in LSTM's order i, o, f, c along the 4H axis; their scales and zero
    points are [D] (one per direction) or [D, 4H] (one per direction and gate column).
    They become the constants (q - zero_point) · scale, in float32 as DequantizeLinear
    computes them, transposed to LSTM's layout, and LSTM's own rule (two Scans per
    direction, sequence_lens, initial states) runs on a node that reads them: the gradient
    is exactly that float LSTM's. onnxruntime's forward also quantizes X, and h at every
    step, to uint8 over their own range (min(·, 0) to max(·, 0), so nothing clips):
    rounding counts as the identity, as for DynamicQuantizeLinear, so the map is taken at
    the float point while the forward outputs carry that rounding.
    """
    unknown = sorted(set(node.attrs) - _DQLSTM_ATTRS)
    if unknown:
        raise RewriteError(f"{node.op_type} node {node.name!r}: attribute(s) {unknown} unsupported")
    # Checked here too (lstm checks them again) so that the refusal names this op.
    _refuse_unsupported(node, _DEFAULT_LSTM_ACTS)
    if node.input(7):
        raise RewriteError(f"{node.op_type} node {node.name!r}: peepholes (input P) unsupported")
    hidden = node.attr("hidden_size")
    if hidden is None:
        raise RewriteError(f"{node.op_type} node {node.name!r}: no hidden_size attribute")
    n_dirs = len(_direction_names(node))
    inputs = node.inputs[:8]
    for index, (label, scale_at, zero_at) in _DQLSTM_QUANTIZED.items():
        weight = _dequantized_lstm_weight(
            g, node, label, (index, scale_at, zero_at), n_dirs, 4 * int(hidden)
        )
        inputs[index] = g.const(weight, hint=f"{label.lower()}_dequantized")
    # The float LSTM that node computes up to rounding: LSTM's inputs, with its attributes
    # (the op_type stays, so the LSTM rule's refusals name this op).
    as_float = Node(node.op_type, node.name, inputs, list(node.outputs), dict(node.attrs))
    grads = lstm(g, as_float, dys, wants[:8])
    # All twelve inputs are there (the scales and zero points were read): none of the
    # quantization parameters gets a gradient.
    return [*grads, *[None] * (len(node.inputs) - len(grads))]


def _dequantized_lstm_weight(
    g: Builder, node: Node, label: str, at: tuple[int, int, int], n_dirs: int, gates: int
) -> np.ndarray:
    """(q - zero_point) · scale of W or R, [D, 4H, K] in float32 (LSTM's layout).

    The difference is exact in int64 and in float32 (|q - z| <= 255), then one float32
    product per entry, as DequantizeLinear's (q - z) · s. A [D, 4H] zero point is applied
    per column as written; onnxruntime's kernel accepts only a zero one (int8) or one
    constant per direction (uint8) there, so the two agree wherever it runs the model.
    """
    names = [node.input(i) for i in at]
    what = (label, f"{label}_scale", f"{label}_zero_point")
    values = []
    for name, role in zip(names, what, strict=True):
        if not name:
            raise RewriteError(f"{node.op_type} node {node.name!r}: input {role} is missing")
        value = g.info.constant(name)
        if value is None:
            raise RewriteError(
                f"{node.op_type} node {node.name!r}: {role} ({name!r}) must be a constant "
                "(an initializer or a Constant node); a computed one has no gradient rule"
            )
        values.append(value)
    q, scale, zero = values
    prefix = f"{node.op_type} node {node.name!r}: {label}"
    if q.dtype not in (np.int8, np.uint8) or q.ndim != 3 or q.shape[0] != n_dirs:
        raise RewriteError(
            f"{prefix} must be int8 or uint8 [{n_dirs}, K, {gates}], not {q.dtype} {list(q.shape)}"
        )
    if q.shape[2] != gates:
        raise RewriteError(f"{prefix} has {q.shape[2]} columns, not 4·hidden_size = {gates}")
    if scale.dtype != np.float32 or scale.shape not in ((n_dirs,), (n_dirs, gates)):
        raise RewriteError(
            f"{prefix}_scale must be float32 [{n_dirs}] or [{n_dirs}, {gates}], "
            f"not {scale.dtype} {list(scale.shape)}"
        )
    if zero.dtype != q.dtype or zero.shape != scale.shape:
        raise RewriteError(
            f"{prefix}_zero_point must be {q.dtype} shaped as its scale "
            f"{list(scale.shape)}, not {zero.dtype} {list(zero.shape)}"
        )
    per_column = (n_dirs, 1, -1)  # broadcast over K: [D] as [D, 1, 1], [D, 4H] as [D, 1, 4H]
    centred = q.astype(np.int64) - zero.astype(np.int64).reshape(per_column)
    weight = centred.astype(np.float32) * scale.reshape(per_column)
    return np.ascontiguousarray(weight.transpose(0, 2, 1))
