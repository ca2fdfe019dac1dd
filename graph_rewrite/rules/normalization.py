"""Normalizations. BatchNormalization runs in inference mode: a per-channel affine map.

Instance and layer normalization divide by statistics of the input itself, so their
gradient flows through the mean and the variance too. With x̂ = (x - μ)·r,
r = 1/sqrt(σ² + ε), M values per group and g = dy·scale:

    dx = r · (g - mean(g) - x̂ · mean(g·x̂))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..builder import Builder, Node
from ..errors import RewriteError
from .common import unbroadcast, upstream
from .table import Grad, register


def _per_channel(g: Builder, values: str, rank: int) -> str:
    """A [C] tensor reshaped to [C, 1, ..., 1], to broadcast over an N·C·spatial tensor."""
    return g.Reshape(values, g.ints([-1, *([1] * (rank - 2))]))


def _rank(g: Builder, node: Node, x: str) -> int:
    rank = g.tensor(x).rank
    if rank is None:
        raise RewriteError(f"{node.op_type} {node.name!r}: the rank of {x!r} is unknown")
    return rank


@register("BatchNormalization")
def batch_norm(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    if int(node.attr("training_mode", 0)):
        raise RewriteError(
            f"BatchNormalization {node.name!r} is in training mode (training_mode=1); export "
            "the model in inference mode (model.eval() in PyTorch) to explain it"
        )
    if any(wants[1:]):
        raise RewriteError(
            f"BatchNormalization {node.name!r}: gradients for scale, bias, mean or variance "
            "computed from the input are not supported"
        )
    x, scale, var = node.inputs[0], node.inputs[1], node.inputs[4]
    eps = float(node.attr("epsilon", 1e-5))
    rank = _rank(g, node, x)
    scale_value, var_value = g.info.constant(scale), g.info.constant(var)
    if scale_value is not None and var_value is not None:
        # Folded at convert time: one Mul in the backward pass.
        folded = scale_value.astype(np.float64) / np.sqrt(var_value.astype(np.float64) + eps)
        shaped = folded.reshape(-1, *([1] * (rank - 2))).astype(g.dtype_of(x))
        return [g.Mul(dy, g.const(shaped, hint="bn_gain")), None, None, None, None]
    gain = g.Div(scale, g.Sqrt(g.Add(var, g.scalar_like(eps, x))))
    return [g.Mul(dy, _per_channel(g, gain, rank)), None, None, None, None]


def _reduce_mean(g: Builder, t: str, axes: list[int]) -> str:
    # ReduceMean takes its axes as an input only from opset 18 on.
    if g.info.opset >= 18:
        return g.ReduceMean(t, g.ints(axes), keepdims=1)
    return g.ReduceMean(t, axes=axes, keepdims=1)


def _normalized_input_grad(
    g: Builder, x: str, gx: str, mean: str, inv_std: str, axes: list[int]
) -> tuple[str, str]:
    """r·(gx - mean(gx) - x̂·mean(gx·x̂)), and x̂ for the caller's scale gradient."""
    x_hat = g.Mul(g.Sub(x, mean), inv_std)
    centred = g.Sub(gx, _reduce_mean(g, gx, axes))
    along = g.Mul(x_hat, _reduce_mean(g, g.Mul(gx, x_hat), axes))
    return g.Mul(inv_std, g.Sub(centred, along)), x_hat


def _statistics(g: Builder, x: str, axes: list[int], eps: float) -> tuple[str, str]:
    """Mean and 1/sqrt(variance + eps) over `axes`, kept as size-1 axes."""
    mean = _reduce_mean(g, x, axes)
    centred = g.Sub(x, mean)
    var = _reduce_mean(g, g.Mul(centred, centred), axes)
    return mean, g.Reciprocal(g.Sqrt(g.Add(var, g.scalar_like(eps, x))))


@register("InstanceNormalization")
def instance_norm(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    x, scale = node.inputs[0], node.inputs[1]
    rank = _rank(g, node, x)
    axes = list(range(2, rank))
    mean, inv_std = _statistics(g, x, axes, float(node.attr("epsilon", 1e-5)))
    gx = g.Mul(dy, _per_channel(g, scale, rank))
    dx, x_hat = _normalized_input_grad(g, x, gx, mean, inv_std, axes)
    others = g.ints([0, *range(2, rank)])
    dscale = g.ReduceSum(g.Mul(dy, x_hat), others, keepdims=0) if wants[1] else None
    dbias = g.ReduceSum(dy, others, keepdims=0) if len(wants) > 2 and wants[2] else None
    return [dx if wants[0] else None, dscale, dbias]


@register("LayerNormalization")
def layer_norm(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    x, scale, y = node.inputs[0], node.inputs[1], node.outputs[0]
    rank = _rank(g, node, x)
    axis = int(node.attr("axis", -1)) % rank
    axes = list(range(axis, rank))
    mean, inv_std = _statistics(g, x, axes, float(node.attr("epsilon", 1e-5)))
    dy = dys[0] if dys[0] is not None else g.Expand(g.scalar_like(0.0, x), g.shape_of(x))
    gx = g.Mul(dy, scale)
    dx, x_hat = _normalized_input_grad(g, x, gx, mean, inv_std, axes)
    dx = _through_statistics_outputs(g, node, dys, dx, x_hat, inv_std, axes)
    dscale = unbroadcast(g, g.Mul(dy, x_hat), scale, y) if wants[1] else None
    bias = node.input(2)
    dbias = unbroadcast(g, dy, bias, y) if bias and wants[2] else None
    return [dx if wants[0] else None, dscale, dbias][: len(node.inputs)]


@register("GroupNormalization")
def group_norm(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """Instance normalization over groups of channels, in the grouped view [N, G, rest].

    Opset 18 scales and shifts per group ([G]), opset 21 per channel ([C]): the scale is
    applied in the view where it broadcasts."""
    dy = upstream(node, dys)
    x, scale, bias = node.inputs[0], node.inputs[1], node.inputs[2]
    rank = _rank(g, node, x)
    groups = int(node.attr("num_groups"))
    grouped, shape = g.ints([0, groups, -1]), g.shape_of(x)
    x3, dy3 = g.Reshape(x, grouped), g.Reshape(dy, grouped)
    per_channel = g.info.opset >= 21
    if per_channel:
        gx3 = g.Reshape(g.Mul(dy, _per_channel(g, scale, rank)), grouped)
    else:
        gx3 = g.Mul(dy3, g.Reshape(scale, g.ints([groups, 1])))
    mean, inv_std = _statistics(g, x3, [2], float(node.attr("epsilon", 1e-5)))
    dx3, x_hat3 = _normalized_input_grad(g, x3, gx3, mean, inv_std, [2])
    dscale = dbias = None
    if wants[1] or wants[2]:
        if per_channel:  # sums over every axis but the channels'
            others = g.ints([0, *range(2, rank)])
            x_hat = g.Reshape(x_hat3, shape)
            dscale = g.ReduceSum(g.Mul(dy, x_hat), others, keepdims=0) if wants[1] else None
            dbias = g.ReduceSum(dy, others, keepdims=0) if wants[2] else None
        else:  # sums over the batch and each group's elements
            both = g.ints([0, 2])
            dscale = g.ReduceSum(g.Mul(dy3, x_hat3), both, keepdims=0) if wants[1] else None
            dbias = g.ReduceSum(dy3, both, keepdims=0) if wants[2] else None
    del bias
    return [g.Reshape(dx3, shape) if wants[0] else None, dscale, dbias]


def _through_statistics_outputs(
    g: Builder,
    node: Node,
    dys: Sequence[Grad],
    dx: str,
    x_hat: str,
    inv_std: str,
    axes: list[int],
) -> str:
    """Adds the gradients reaching LayerNormalization's Mean and InvStdDev outputs.

    dμ/dx = 1/M and dr/dx = -r²·x̂/M, M being the number of normalized values per group.
    """
    d_mean = dys[1] if len(dys) > 1 else None
    d_inv_std = dys[2] if len(dys) > 2 else None
    if d_mean is None and d_inv_std is None:
        return dx
    x = node.inputs[0]
    ones = g.Expand(g.scalar_like(1.0, x), g.shape_of(x))
    per_value = g.Reciprocal(g.ReduceSum(ones, g.ints(axes), keepdims=1))  # 1/M, at run time
    if d_mean is not None:
        dx = g.Add(dx, g.Mul(d_mean, per_value))
    if d_inv_std is not None:
        slope = g.Mul(g.Mul(inv_std, inv_std), g.Mul(x_hat, per_value))
        dx = g.Sub(dx, g.Mul(d_inv_std, slope))
    return dx


def _channel_window_sum(
    g: Builder, t: str, rank: int, before: int, after: int, size: int, like: str
) -> str:
    """Sums of `t` over channels c-before..c+after, as a Conv over an added unit axis."""
    spatial = rank - 2
    kernel = np.ones((1, 1, size, *([1] * spatial)), dtype=g.dtype_of(like))
    stacked = g.Unsqueeze(t, g.ints([1]))
    summed = g.Conv(
        stacked,
        g.const(kernel, hint="lrn_window"),
        pads=[before, *([0] * spatial), after, *([0] * spatial)],
    )
    return g.Squeeze(summed, g.ints([1]))


@register("LRN")
def lrn(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """y = x·S^-β, S = bias + α/n·Σ_window x²:

    dx = dy·S^-β - (2αβ/n)·x·Σ_mirrored window(dy·x·S^(-β-1))
    """
    dy = upstream(node, dys)
    x = node.inputs[0]
    rank = _rank(g, node, x)
    size = int(node.attr("size"))
    alpha = float(node.attr("alpha", 1e-4))
    beta = float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    low, high = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq_sum = _channel_window_sum(g, g.Mul(x, x), rank, low, high, size, x)
    s = g.Add(g.Mul(sq_sum, g.scalar_like(alpha / size, x)), g.scalar_like(bias, x))
    direct = g.Mul(dy, g.Pow(s, g.scalar_like(-beta, x)))
    inner = g.Mul(g.Mul(dy, x), g.Pow(s, g.scalar_like(-beta - 1.0, x)))
    # Channel j sits in the window of channel c when c-low <= j <= c+high, that is
    # c in j-high..j+low: the mirrored window.
    back = _channel_window_sum(g, inner, rank, high, low, size, x)
    cross = g.Mul(g.Mul(x, back), g.scalar_like(2.0 * alpha * beta / size, x))
    return [g.Sub(direct, cross)]
