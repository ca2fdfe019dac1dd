"""Max pooling: the gradient goes to each window's (first) maximum.

MaxPool takes one of two forms:
- portable (the default): standard ops and no Indices output (`_portable_form`). TensorRT
  has no Indices output at all, and OpenVINO 2026.4 runs a MaxPool that has one on a
  slow reference kernel (64 of 112 ms of the light-zoo ResNet-50's guided explain model).
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
from .common import known_rank, onnx_type, scatter_add, upstream, zeros_like
from .conv import ConvGeometry, conv_geometry
from .table import Grad, register


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
    dx = scatter_add(
        g, _zeros_like(g, x, flat_size), g.Reshape(indices, flat), g.Reshape(dy, flat), 0, x
    )
    return g.Reshape(dx, x_shape)


def _spatial_sizes(g: Builder, name: str, nd: int) -> tuple[list[int] | None, str | None]:
    """The spatial sizes of `name`: static ints, else a runtime int64 tensor."""
    static = g.tensor(name).static_from(2)
    if static is not None:
        return list(static), None
    return None, g.Slice(g.Shape(name), g.ints([2]), g.ints([2 + nd]), g.ints([0]))


def _tap_offsets(geo: ConvGeometry) -> list[list[int]]:
    """Each kernel tap's offset from its window's start, in window (row-major) order."""
    taps = itertools.product(*(range(k) for k in geo.kernel))
    return [[i * d for i, d in zip(tap, geo.dilations)] for tap in taps]


def _first_maximum(g: Builder, taps: list[str], y: str, dy: str) -> list[str]:
    """Per tap, dy where the tap holds its window's first maximum, else 0.

    MaxPool returns one of its inputs exactly, so Equal finds the maxima. A running
    remainder keeps only the first: it starts as dy, each tap takes remainder·[hit] and
    leaves remainder - taken, which is exactly 0 once a tap has taken it. Elementwise
    ops only (OpenVINO runs CumSum on a reference kernel, and fuses this chain).
    """
    remaining = dy
    taken = []
    for i, tap in enumerate(taps):
        got = g.Mul(remaining, g.Cast(g.Equal(tap, y), to=onnx_type(g, y)))
        taken.append(got)
        if i + 1 < len(taps):
            remaining = g.Sub(remaining, got)
    return taken


def _nan_padded(g: Builder, x: str, begin: list[int], end: list[int]) -> str:
    """x padded with NaN, which equals nothing: padding never wins a window."""
    if not any(begin) and not any(end):
        return x
    pads = g.ints([0, 0, *begin, 0, 0, *end])
    return g.Pad(x, pads, g.scalar_like(float("nan"), x))


def _phase_form(g: Builder, geo: ConvGeometry, x: str, y: str, dy: str) -> str | None:
    """2-D pools with one stride s and static sizes: whole-tensor moves, no strided slices.

    SpaceToDepth splits the padded input into its s·s phases; a tap at offset (a, b) is
    then a plain slice of phase (a mod s, b mod s) shifted by (a div s, b div s). The
    taps' gradients go back the same way: shifted by Pad, summed per phase, and
    DepthToSpace interleaves the phases. On OpenVINO this is 4-10x faster than strided
    slices and a ConvTranspose; on onnxruntime about as fast.
    """
    shape = g.tensor(x).static_from(1)  # the batch may be dynamic
    out = g.tensor(y).static_from(2)
    s = geo.strides[0]
    if shape is None or out is None or len(shape) != 3 or geo.strides != [s, s]:
        return None
    c, spatial = shape[0], list(shape[1:])
    # Phase planes hold every input row and every window: ceil(needed / s) rows each.
    need = [
        max(b + n + e, (o - 1) * s + (k - 1) * d + 1)
        for b, n, e, o, k, d in zip(
            geo.pads_begin, spatial, geo.pads_end, out, geo.kernel, geo.dilations
        )
    ]
    planes = [-(-m // s) for m in need]
    pads_end = [p * s - b - n for p, b, n in zip(planes, geo.pads_begin, spatial)]
    padded = _nan_padded(g, x, geo.pads_begin, pads_end)
    phases = g.SpaceToDepth(padded, blocksize=s) if s > 1 else padded
    taps, placements = [], []
    for offset in _tap_offsets(geo):
        phase = [a % s for a in offset]
        shift = [a // s for a in offset]
        block = phase[0] * s + phase[1]  # SpaceToDepth's channel blocks: (row phase, col phase)
        starts = g.ints([block * c, *shift])
        ends = g.ints([(block + 1) * c, *[a + o for a, o in zip(shift, out)]])
        taps.append(g.Slice(phases, starts, ends, g.ints([1, 2, 3])))
        placements.append((block, shift))
    by_block: dict[int, list[str]] = {}
    for got, (block, shift) in zip(_first_maximum(g, taps, y, dy), placements):
        rest = [p - a - o for p, a, o in zip(planes, shift, out)]
        if any(shift) or any(rest):
            got = g.Pad(got, g.ints([0, 0, *shift, 0, 0, *rest]))
        by_block.setdefault(block, []).append(got)
    zeros = None
    blocks = []
    for block in range(s * s):
        parts = by_block.get(block)
        if parts is None:  # a kernel smaller than the stride never reads this phase
            if zeros is None:
                batch = g.Slice(g.shape_of(x), g.ints([0]), g.ints([1]))
                zeros_shape = g.Concat(batch, g.ints([c, *planes]), axis=0)
                zeros = g.Expand(g.scalar_like(0.0, x), zeros_shape)
            blocks.append(zeros)
        else:
            blocks.append(parts[0] if len(parts) == 1 else g.Sum(*parts))
    full = g.DepthToSpace(g.Concat(*blocks, axis=1), blocksize=s) if s > 1 else blocks[0]
    if any(geo.pads_begin) or any(pads_end):
        ends = g.ints([b + n for b, n in zip(geo.pads_begin, spatial)])
        full = g.Slice(full, g.ints(geo.pads_begin), ends, g.ints([2, 3]))
    return full


def _strided_form(g: Builder, node: Node, geo: ConvGeometry, dy: str) -> str:
    """Any rank, strides and sizes (dynamic ones too): strided slices and a ConvTranspose.

    Each tap is a strided Slice of the NaN-padded input aligned with the output grid. The
    taps' gradients go back through one ConvTranspose whose one-hot kernel puts tap t at
    its offset, so that gradients of overlapping windows landing on one input position
    add up; its rows are the N·C planes, which keeps it the same for any channel count.
    """
    x, y = node.inputs[0], node.outputs[0]
    nd = len(geo.kernel)
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
    padded = _nan_padded(g, x, geo.pads_begin, [e + o for e, o in zip(geo.pads_end, overhang)])

    axes = g.ints(list(range(2, 2 + nd)))
    steps = g.ints(geo.strides)
    # A tap's slice spans (O-1)·s + 1 positions from its offset.
    if out_static is not None:
        span: list[int] | str = [(o - 1) * s + 1 for o, s in zip(out_static, geo.strides)]
    else:
        assert out_runtime is not None
        span = g.Add(g.Mul(g.Sub(out_runtime, g.ints([1] * nd)), steps), g.ints([1] * nd))
    taps = []
    for starts in _tap_offsets(geo):
        if isinstance(span, list):
            ends = g.ints([b + n for b, n in zip(starts, span)])
        else:
            ends = g.Add(span, g.ints(starts))
        taps.append(g.Slice(padded, g.ints(starts), ends, axes, steps))

    # The N·C planes, one channel per tap.
    if out_static is not None:
        plane = g.ints([-1, 1, *out_static])
    else:
        assert out_runtime is not None
        plane = g.Concat(g.ints([-1, 1]), out_runtime, axis=0)
    per_tap = [g.Reshape(got, plane) for got in _first_maximum(g, taps, y, dy)]
    stacked = g.Concat(*per_tap, axis=1) if len(per_tap) > 1 else per_tap[0]
    kernel = np.zeros((len(taps), 1, *geo.kernel), dtype=g.dtype_of(x))
    for t, offset in enumerate(itertools.product(*(range(k) for k in geo.kernel))):
        kernel[(t, 0, *offset)] = 1.0
    full = g.ConvTranspose(
        stacked,
        g.const(kernel, hint="tap_kernel"),
        strides=geo.strides,
        dilations=geo.dilations,
    )
    # `full` covers padded positions [0, (O-1)·s + (k-1)·d + 1); the input sits at
    # [pads_begin, pads_begin + size). Floor mode can leave up to s-1 input positions that
    # no window reaches: pad them with zero gradient, then crop to the input.
    if in_static is not None and out_static is not None:
        produced = [(o - 1) * s + r for o, s, r in zip(out_static, geo.strides, reach)]
        short = [max(b + n - p, 0) for b, n, p in zip(geo.pads_begin, in_static, produced)]
    else:
        short = [s - 1 for s in geo.strides]
    if any(short):
        full = g.Pad(full, g.ints([0, 0] + [0] * nd + [0, 0] + short))
    if in_static is not None:
        ends = g.ints([b + n for b, n in zip(geo.pads_begin, in_static)])
    else:
        assert in_runtime is not None
        ends = g.Add(in_runtime, g.ints(geo.pads_begin))
    dx = g.Slice(full, g.ints(geo.pads_begin), ends, axes)
    return g.Reshape(dx, g.shape_of(x))


def _portable_form(g: Builder, node: Node, dy: str) -> str:
    """dx in standard ops without Indices: every tap compared with its window's maximum."""
    x, y = node.inputs[0], node.outputs[0]
    nd = known_rank(g, node, x) - 2
    geo = conv_geometry(g, node, "", x)
    if len(geo.kernel) != nd:
        raise RewriteError(f"MaxPool {node.name!r}: kernel_shape has {len(geo.kernel)} axes")
    phased = _phase_form(g, geo, x, y, dy)
    if phased is not None:
        return phased
    if g.dtype_of(x) != np.float32:
        # The strided form ends in a ConvTranspose, which onnxruntime CPU has for float32
        # only. Indices and ScatterElements are standard ONNX too, and an engine that runs
        # float64 at all (TensorRT does not) evaluates them the same way; only slower.
        return _scatter_form(g, node, dy)
    return _strided_form(g, node, geo, dy)


@register("MaxPool")
def max_pool(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    if int(node.attr("storage_order", 0)) != 0:
        raise RewriteError(f"MaxPool {node.name!r}: storage_order=1 is not supported")
    if g.target == "onnxruntime":
        return [_scatter_form(g, node, dy)]
    return [_portable_form(g, node, dy)]


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
    zeros = g.Reshape(zeros_like(g, x), by_channel)
    dx = g.ScatterElements(zeros, first_max, g.Reshape(dy, by_channel), axis=2)
    return [g.Reshape(dx, x_shape)]
