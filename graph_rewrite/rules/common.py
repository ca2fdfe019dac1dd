"""Helpers that several rule families share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from ..builder import Builder, Node
from ..errors import RewriteError
from ..model_info import Dim
from .table import Grad

# Slice ends that mean "to the end" in either direction.
INT_MAX = 2**63 - 1
INT_MIN = -(2**63)


def upstream(node: Node, dys: Sequence[Grad]) -> str:
    """The gradient of a one-output node's output (the driver calls a rule only with one)."""
    dy = dys[0]
    if dy is None:
        raise AssertionError(f"{node.op_type} {node.name!r}: called without a gradient")
    return dy


def onnx_type(g: Builder, like: str) -> int:
    """The ONNX element type of tensor `like` (float where unknown)."""
    return int(helper.np_dtype_to_tensor_dtype(g.dtype_of(like)))


def float_mask(g: Builder, condition: str, like: str) -> str:
    """A boolean tensor as 0/1 in the float type of `like`: Cast·Mul beats Where on CPU."""
    return g.Cast(condition, to=onnx_type(g, like))


# The float32 mask [x > 0] is one HardSigmoid: clip(2^127·x - 2^-30, 0, 1).
# - x <= 0 gives a negative argument, so 0; x >= 2^-127 gives at least 1 - 2^-30, which
#   rounds to 1 in float32 and bfloat16 (and clips to 1 in any wider type). Only positive
#   subnormals below 2^-127 get a fraction.
# - 2^127 rather than FLT_MAX: it stays finite when a runtime rounds the attribute to
#   bfloat16, where FLT_MAX rounds to infinity and infinity·0 is NaN. No slope is exact in
#   float16 (the smallest positive float16 needs 2^24, past float16's largest 65504): an
#   engine that lowers a float32 graph to float16 (TensorRT's FP16 mode) must not run it.
# - beta is not 0 on purpose: OpenVINO 2026.4.1 reads a HardSigmoid alpha or beta that is
#   exactly 0.0 as absent and takes the default (beta 0.5), which turned every dead unit's
#   mask into 0.5.
_MASK_SLOPE = 2.0**127
_MASK_OFFSET = -(2.0**-30)


def positive_mask(g: Builder, x: str) -> str:
    """[x > 0] as 0/1 in the float type of `x`.

    float32, on every target: one HardSigmoid. onnxruntime CPU keeps it, with the Mul that
    applies the mask, in its blocked NCHWc layout next to the convolutions, where a
    comparison forces reorders out of that layout and back for every mask (PyTorch
    ResNet-50, guided: 20 reorders against 154 for Cast(Greater), Min/Clip(Mul) or Sign;
    explain/forward about 4% lower). OpenVINO computes it right (beta is not 0) but on a
    reference kernel: its ResNet-50 guided explain model is about 10% slower than with the
    comparison, still near onnxruntime's ratio; the default favours the runtime most
    models are served on. Other float types: Cast(Greater(x, 0)), exact in each of them.
    """
    if g.dtype_of(x) == np.float32:
        return g.HardSigmoid(x, alpha=_MASK_SLOPE, beta=_MASK_OFFSET)
    return float_mask(g, g.Greater(x, g.scalar_like(0.0, x)), x)


def channel_affine(
    g: Builder, t: str, channels: int, scale: float, bias: float | None = None
) -> str:
    """t·scale (+ bias) for a float32 [N, C, ...] tensor, as a depthwise 1x1 Conv: onnxruntime
    CPU keeps a Conv in its blocked NCHWc layout, where a Mul or Add of a scalar leaves it
    (two reorders each). The Conv rounds as the Mul and Add do."""
    weight = g.const(np.full((channels, 1, 1, 1), scale, np.float32), hint="w_channel_scale")
    if bias is None:
        return g.Conv(t, weight, group=channels)
    shift = g.const(np.full(channels, bias, np.float32), hint="b_channel_shift")
    return g.Conv(t, weight, shift, group=channels)


def zeros_like(g: Builder, like: str) -> str:
    """Zeros with the runtime shape and float type of `like`."""
    return g.Expand(g.scalar_like(0.0, like), g.shape_of(like))


def scatter_add(g: Builder, zeros: str, indices: str, updates: str, axis: int, like: str) -> str:
    """ScatterElements(zeros, indices, updates, reduction="add"): repeated indices add up;
    `like` is the forward tensor whose float type the gradient has.

    In float16 the sums are taken in float32 and the result cast back: onnxruntime's CPU
    kernel has no float16 add reduction ("MLFloat16 data type is not supported with
    ScatterElements when reduction is 'add'": timm ConvNeXt's dynamo export as float16
    failed at run time), and float32 sums round once where float16 would each time."""
    elem = onnx_type(g, like)
    if elem in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
        wide = onnx.TensorProto.FLOAT
        summed = g.ScatterElements(
            g.Cast(zeros, to=wide), indices, g.Cast(updates, to=wide), axis=axis, reduction="add"
        )
        return g.Cast(summed, to=elem)
    return g.ScatterElements(zeros, indices, updates, axis=axis, reduction="add")


def known_rank(g: Builder, node: Node, name: str) -> int:
    rank = g.tensor(name).rank
    if rank is None:
        raise RewriteError(f"{node.op_type} {node.name!r}: the rank of {name!r} is unknown")
    return rank


def sum_to(g: Builder, grad: str, grad_shape: Sequence[Dim], operand: str) -> str:
    """Sums `grad` (of shape `grad_shape`, broadcast from `operand`) to `operand`'s shape.

    Axes are chosen from static shapes: leading axes the operand lacks, and axes where
    the operand has size 1 and the gradient does not. A symbolic dimension is taken not to
    broadcast (a dynamic batch of 1 against a dynamic batch of N is not supported).
    """
    op_shape = g.tensor(operand).shape
    if op_shape is None:
        raise RewriteError(f"broadcasting needs the rank of {operand!r}")
    if tuple(op_shape) == tuple(grad_shape):
        return grad
    lead = len(grad_shape) - len(op_shape)
    axes = list(range(lead))
    for i, d in enumerate(op_shape):
        if d == 1 and grad_shape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        grad = g.ReduceSum(grad, g.ints(axes), keepdims=1)
    if lead or not axes:
        grad = g.reshape_like(grad, operand)
    return grad


def unbroadcast(g: Builder, grad: str, operand: str, result: str) -> str:
    """Sums `grad` (shaped like the broadcast `result`) back to the shape of `operand`."""
    res_shape = g.tensor(result).shape
    if res_shape is None:
        raise RewriteError(f"broadcasting needs the rank of {result!r}")
    return sum_to(g, grad, res_shape, operand)


def reduction_axes(g: Builder, node: Node, axes_input: int = 1) -> list[int] | None:
    """A reduction's axes, from the attribute (older opsets) or the input (newer ones).

    None means "no axes given". Computed axes cannot be read: the gradient's shape
    depends on them.
    """
    axes = node.attr("axes")
    if axes is not None:
        return [int(a) for a in axes]
    name = node.input(axes_input)
    if not name:
        return None
    value = g.info.constant_ints(name)
    if value is None:
        raise RewriteError(f"{node.op_type} {node.name!r}: computed axes are not supported")
    return value


def unshared_weight(g: Builder, w: str) -> str:
    """A constant weight as the backward's own initializer, not the forward node's.

    OpenVINO 2026.4 CPU computes a wrong result when one weight initializer feeds a forward
    op and a backward op that reads it the other way round: a Conv and a ConvTranspose
    (relative error 1.36 on a 24x24x2x2 weight, 1.41 on 256x256x3x3), or a Gemm and the
    Gemm of its backward (0.32 on VGG-19's guided map through its 4096x4096 classifier).
    Each is exact once each node has its own copy. So on the portable target the backward
    of a strided Conv, a ConvTranspose and a Gemm reads a copy (the weight is stored
    twice: VGG-19's explain model grows by its classifier, about 480 MB). onnxruntime
    computes both right from one initializer: its target shares the weight.
    """
    if g.target == "onnxruntime":
        return w
    stored = g.info.initializer(w)
    if stored is not None:
        return g.copy_of(stored, hint="w_backward")
    # A Constant node's value, or a QDQ model's dequantized weight: shared as the
    # DequantizeLinear's output, it misled OpenVINO the same way (int8 ResNet-18).
    weight = g.info.weight(w)
    return w if weight is None else g.const(weight, hint="w_backward")
