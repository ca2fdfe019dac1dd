"""Reductions: the gradient is dY given back its reduced axes, then broadcast to X.

Axes come as an attribute (ReduceMean/Max/Min/L2 before opset 18) or as an input
(ReduceSum from 13, the others from 18); both forms are read. With keepdims=0 the
reduced axes are put back with Unsqueeze, so that dY broadcasts against X.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..builder import Builder, Node
from .channel_gate import mean_spread
from .common import float_mask, onnx_type, reduction_axes, upstream
from .table import Grad, register


@dataclass(frozen=True)
class Reduction:
    # None: every axis. []: none (empty axes with noop_with_empty_axes), where the op
    # still applies its elementwise part (|x| for ReduceL1, x² for ReduceSumSquare...).
    axes: list[int] | None
    keepdims: bool


def reduction(g: Builder, node: Node) -> Reduction:
    axes = reduction_axes(g, node)
    if not axes:
        axes = [] if int(node.attr("noop_with_empty_axes", 0)) else None
    return Reduction(axes, bool(node.attr("keepdims", 1)))


def kept(g: Builder, red: Reduction, t: str) -> str:
    """A reduced tensor (dY or Y) with its reduced axes back as size 1."""
    if red.keepdims or not red.axes:
        # Reduced over every axis without keepdims: a scalar, which broadcasts as it is.
        return t
    return g.Unsqueeze(t, g.ints(red.axes))


def _to_input(node: Node, dx: str) -> list[Grad]:
    return [dx, *([None] * (len(node.inputs) - 1))]


@register("ReduceSum")
def reduce_sum(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    red = reduction(g, node)
    return _to_input(node, g.Expand(kept(g, red, dy), g.shape_of(x)))


@register("ReduceMean")
def reduce_mean(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    red = reduction(g, node)
    per_sample = g.tensor(x).static_from(1)
    if (
        per_sample is not None
        and len(per_sample) == 3
        and red.axes is not None
        and sorted(a % 4 for a in red.axes) == [2, 3]
        and g.dtype_of(x) == np.float32
    ):  # a spatial mean (squeeze-excitation's, a head's): in onnxruntime's blocked layout
        spread = mean_spread(g, kept(g, red, dy), per_sample[0], per_sample[1:])
        return _to_input(node, spread)
    share = g.Div(kept(g, red, dy), _count(g, red, x, node.outputs[0]))
    return _to_input(node, g.Expand(share, g.shape_of(x)))


def _count(g: Builder, red: Reduction, x: str, y: str) -> str:
    """How many elements each output averages: a constant when the axes' sizes are known."""
    shape = g.tensor(x).shape
    if shape is not None:
        axes = range(len(shape)) if red.axes is None else red.axes
        sizes = [shape[a] for a in axes]
        static = [s for s in sizes if isinstance(s, int)]
        if len(static) == len(sizes):
            return g.scalar_like(float(math.prod(static)), x)
    ratio = g.Div(g.Size(x), g.Size(y))
    return g.Cast(ratio, to=onnx_type(g, x))


@register("ReduceMax", "ReduceMin")
def reduce_extremum(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    """To the elements equal to the extremum, split evenly between ties (as torch.amax).

    Splitting, rather than picking the first like torch.max(dim), needs no index
    arithmetic and is the symmetric choice among the valid subgradients.
    """
    dy, x = upstream(node, dys), node.inputs[0]
    red = reduction(g, node)
    if red.axes == []:
        return _to_input(node, dy)
    hits = float_mask(g, g.Equal(x, kept(g, red, node.outputs[0])), x)
    axes = [] if red.axes is None else [g.ints(red.axes)]
    ties = g.ReduceSum(hits, *axes, keepdims=1)
    return _to_input(node, g.Mul(hits, g.Div(kept(g, red, dy), ties)))


@register("ReduceL2")
def reduce_l2(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """x / ‖x‖ · dY; a zero norm gives a zero gradient (x is all zero there), not NaN."""
    dy, x = upstream(node, dys), node.inputs[0]
    red = reduction(g, node)
    tiny = g.scalar_like(float(np.finfo(g.dtype_of(x)).tiny), x)
    norm = g.Max(kept(g, red, node.outputs[0]), tiny)
    return _to_input(node, g.Mul(x, g.Div(kept(g, red, dy), norm)))


@register("ReduceL1")
def reduce_l1(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    red = reduction(g, node)
    return _to_input(node, g.Mul(g.Sign(x), kept(g, red, dy)))


@register("ReduceSumSquare")
def reduce_sum_square(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    red = reduction(g, node)
    return _to_input(node, g.Mul(g.Add(x, x), kept(g, red, dy)))


@register("ReduceLogSumExp")
def reduce_log_sum_exp(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    """softmax(x) over the reduced axes, exp(x - y), times dY."""
    dy, x = upstream(node, dys), node.inputs[0]
    red = reduction(g, node)
    weights = g.Exp(g.Sub(x, kept(g, red, node.outputs[0])))
    return _to_input(node, g.Mul(weights, kept(g, red, dy)))
