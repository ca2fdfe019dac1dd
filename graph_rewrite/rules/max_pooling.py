"""Max pooling: the gradient goes to each window's (first) maximum.

MaxPool: the forward node's own Indices output plus ScatterElements(reduction="add").
Overlapping windows (3x3 stride 2) can pick one input position twice, and those
gradients must add up: MaxUnpool and plain ScatterElements overwrite and are wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..builder import Builder, Node
from ..errors import RewriteError
from . import Grad, register
from .common import upstream


def _zeros_like(g: Builder, x: str, shape: str) -> str:
    return g.Expand(g.scalar_like(0.0, x), shape)


def _indices_output(g: Builder, node: Node) -> str:
    """The forward MaxPool's Indices output, added to the forward node if it has none.

    Asking the forward node for its argmax costs one indices kernel; a second pooling
    pass just to find the maxima would cost a whole extra MaxPool.
    """
    if len(node.outputs) > 1 and node.outputs[1]:
        return node.outputs[1]
    proto = node.proto
    if proto is None:
        raise RewriteError(f"MaxPool {node.name!r}: the forward node is not available")
    name = g.fresh("maxpool_indices")
    if len(proto.output) > 1:
        proto.output[1] = name
    else:
        proto.output.append(name)
    node.outputs = list(proto.output)
    return name


@register("MaxPool")
def max_pool(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    if int(node.attr("storage_order", 0)) != 0:
        raise RewriteError(f"MaxPool {node.name!r}: storage_order=1 is not supported")
    x = node.inputs[0]
    indices = _indices_output(g, node)
    # onnxruntime's Indices are flat over the whole N·C·spatial tensor: scatter into a
    # flat tensor of x's size, then give it x's shape.
    x_shape = g.shape_of(x)
    flat_size = g.ReduceProd(x_shape, keepdims=1)
    flat = g.ints([-1])
    dx = g.ScatterElements(
        _zeros_like(g, x, flat_size),
        g.Reshape(indices, flat),
        g.Reshape(dy, flat),
        axis=0,
        reduction="add",
    )
    return [g.Reshape(dx, x_shape)]


@register("GlobalMaxPool")
def global_max_pool(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    dy = upstream(node, dys)
    x = node.inputs[0]
    # Like torch, the whole gradient goes to the first maximum (ArgMax picks the first).
    by_channel = g.ints([0, 0, -1])
    x_flat = g.Reshape(x, by_channel)
    first_max = g.ArgMax(x_flat, axis=2, keepdims=1)
    x_shape = g.shape_of(x)
    zeros = g.Reshape(_zeros_like(g, x, x_shape), by_channel)
    dx = g.ScatterElements(zeros, first_max, g.Reshape(dy, by_channel), axis=2)
    return [g.Reshape(dx, x_shape)]
