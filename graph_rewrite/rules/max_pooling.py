"""Max pooling: the gradient goes to each window's (first) maximum.

MaxPool takes one of two forms:
- portable (the default): standard ops and no Indices output. TensorRT has no Indices
  output at all, and OpenVINO 2026.4 runs a MaxPool that has one on a slow reference
  kernel (64 of 112 ms of the light-zoo ResNet-50's guided explain model). See
  `_window_form`.
- onnxruntime: the forward node's own Indices output plus ScatterElements(reduction="add").

Both are exact where windows overlap (3x3 stride 2 picks one input position for several
windows, and those gradients must add up: MaxUnpool and plain ScatterElements overwrite
and are wrong), and both give a tied window's gradient to its first maximum in window
order, as onnxruntime's Indices and PyTorch do.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..builder import Builder, Node
from ..errors import RewriteError
from . import Grad, register
from .common import known_rank, onnx_type, upstream
from .conv import ConvGeometry, conv_geometry


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


def _scatter_form(g: Builder, node: Node, dy: str) -> str:
    """dx by the forward node's Indices and a ScatterElements that adds."""
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
    return g.Reshape(dx, x_shape)


def _spatial_sizes(g: Builder, name: str, nd: int) -> tuple[list[int] | None, str | None]:
    """The spatial sizes of `name`: static ints, else a runtime int64 tensor."""
    static = g.tensor(name).static_from(2)
    if static is not None:
        return list(static), None
    return None, g.Slice(g.Shape(name), g.ints([2]), g.ints([2 + nd]), g.ints([0]))


def _window_form(g: Builder, node: Node, dy: str) -> str:
    """dx in standard ops, without Indices: every window position compared with the max.

    MaxPool returns one of its inputs exactly, so for each kernel tap a strided Slice of
    the input, aligned with the output grid, says by Equal where that tap holds its
    window's maximum. The input is padded with NaN first, which equals nothing: padding
    never wins. The taps are stacked on a new axis in window order; CumSum over it keeps
    only each window's first match (ties go where onnxruntime's Indices and PyTorch send
    them). dy times that one-hot selection goes back to the input grid through one
    ConvTranspose whose one-hot kernel puts tap t at its offset in the window, so that
    gradients of overlapping windows landing on one input position add up. The rows of
    that ConvTranspose are the N·C planes, which keeps it the same for any channel count.
    """
    x, y = node.inputs[0], node.outputs[0]
    nd = known_rank(g, node, x) - 2
    geo = conv_geometry(g, node, "", x)
    if len(geo.kernel) != nd:
        raise RewriteError(f"MaxPool {node.name!r}: kernel_shape has {len(geo.kernel)} axes")
    ceil_mode = bool(node.attr("ceil_mode", 0))
    in_static, in_runtime = _spatial_sizes(g, x, nd)
    out_static, out_runtime = _spatial_sizes(g, y, nd)

    # Windows end at (O-1)·s + (k-1)·d + 1 in padded coordinates; in ceil_mode that can
    # run up to s-1 past the end padding. Pad the end far enough for every tap's slice.
    reach = [(k - 1) * d + 1 for k, d in zip(geo.kernel, geo.dilations)]
    if in_static is not None and out_static is not None:
        overhang = [
            max((o - 1) * s + r - (b + n + e), 0)
            for o, s, r, b, n, e in zip(
                out_static, geo.strides, reach, geo.pads_begin, in_static, geo.pads_end
            )
        ]
    else:
        overhang = [s - 1 if ceil_mode else 0 for s in geo.strides]
    pads_end = [e + o for e, o in zip(geo.pads_end, overhang)]
    padded = x
    if any(geo.pads_begin) or any(pads_end):
        nan = g.scalar_like(float("nan"), x)
        padded = g.Pad(x, g.ints([0, 0, *geo.pads_begin, 0, 0, *pads_end]), nan)

    axes = g.ints(list(range(2, 2 + nd)))
    steps = g.ints(geo.strides)
    # A tap's slice spans (O-1)·s + 1 positions from its offset.
    if out_static is not None:
        span: list[int] | str = [(o - 1) * s + 1 for o, s in zip(out_static, geo.strides)]
    else:
        assert out_runtime is not None
        span = g.Add(g.Mul(g.Sub(out_runtime, g.ints([1] * nd)), steps), g.ints([1] * nd))
    taps = []
    for offsets in itertools.product(*(range(k) for k in geo.kernel)):
        starts = [i * d for i, d in zip(offsets, geo.dilations)]
        if isinstance(span, list):
            ends = g.ints([b + n for b, n in zip(starts, span)])
        else:
            ends = g.Add(span, g.ints(starts))
        taps.append(g.Unsqueeze(g.Slice(padded, g.ints(starts), ends, axes, steps), g.ints([2])))
    stacked = g.Concat(*taps, axis=2) if len(taps) > 1 else taps[0]

    # [N, C, T, *O]: which taps hold their window's maximum, and the first of them.
    tap_axis = g.ints([2])
    hits = g.Cast(g.Equal(stacked, g.Unsqueeze(y, tap_axis)), to=onnx_type(g, x))
    earlier = g.CumSum(hits, g.ints(2), exclusive=1)
    first = g.Relu(g.Sub(hits, earlier))  # 1 where hit and no earlier hit, else <= 0
    per_tap = g.Mul(first, g.Unsqueeze(dy, tap_axis))

    return _place_taps(g, per_tap, geo, x, nd, in_static, in_runtime, out_static, out_runtime)


def _place_taps(
    g: Builder,
    per_tap: str,
    geo: ConvGeometry,
    x: str,
    nd: int,
    in_static: list[int] | None,
    in_runtime: str | None,
    out_static: list[int] | None,
    out_runtime: str | None,
) -> str:
    """Sums each tap's [N, C, T, *O] gradient onto the input positions it was taken from."""
    n_taps = int(np.prod(geo.kernel))
    kernel = np.zeros((n_taps, 1, *geo.kernel), dtype=g.dtype_of(x))
    for t, offsets in enumerate(itertools.product(*(range(k) for k in geo.kernel))):
        kernel[(t, 0, *offsets)] = 1.0
    if out_static is not None:
        planes = g.ints([-1, n_taps, *out_static])
    else:
        assert out_runtime is not None
        planes = g.Concat(g.ints([-1, n_taps]), out_runtime, axis=0)
    full = g.ConvTranspose(
        g.Reshape(per_tap, planes),
        g.const(kernel, hint="tap_kernel"),
        strides=geo.strides,
        dilations=geo.dilations,
    )
    # `full` covers padded positions [0, (O-1)·s + (k-1)·d + 1); the input sits at
    # [pads_begin, pads_begin + size). Floor mode can leave up to s-1 input positions that
    # no window reaches: pad them with zero gradient, then crop to the input.
    if in_static is not None and out_static is not None:
        produced = [
            (o - 1) * s + (k - 1) * d + 1
            for o, s, k, d in zip(out_static, geo.strides, geo.kernel, geo.dilations)
        ]
        short = [max(b + n - p, 0) for b, n, p in zip(geo.pads_begin, in_static, produced)]
        if any(short):
            full = g.Pad(full, g.ints([0, 0] + [0] * nd + [0, 0] + short))
        ends: str = g.ints([b + n for b, n in zip(geo.pads_begin, in_static)])
    else:
        short = [s - 1 for s in geo.strides]
        if any(short):
            full = g.Pad(full, g.ints([0, 0] + [0] * nd + [0, 0] + short))
        if in_runtime is None:
            assert in_static is not None
            ends = g.ints([b + n for b, n in zip(geo.pads_begin, in_static)])
        else:
            ends = g.Add(in_runtime, g.ints(geo.pads_begin))
    dx = g.Slice(full, g.ints(geo.pads_begin), ends, g.ints(list(range(2, 2 + nd))))
    return g.Reshape(dx, g.shape_of(x))


@register("MaxPool")
def max_pool(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    if int(node.attr("storage_order", 0)) != 0:
        raise RewriteError(f"MaxPool {node.name!r}: storage_order=1 is not supported")
    if g.target == "onnxruntime":
        return [_scatter_form(g, node, dy)]
    return [_window_form(g, node, dy)]


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
