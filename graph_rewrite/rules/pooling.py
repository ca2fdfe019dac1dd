"""Average pooling: the gradient is spread evenly over each window (max pools: max_pooling.py).

AveragePool: dy over each window's divisor, spread back by a depthwise ConvTranspose with
a ones kernel. With static sizes the divisor map is computed here in numpy (it is separable
per spatial axis) and the ConvTranspose's output padding gives the input's exact size.
With sizes known only at run time (OCR, detectors) the graph computes both: the divisors
by a ones-kernel Conv over a ones image, the input's extent by a Slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import numpy_helper

from ..builder import Builder, Node
from ..errors import RewriteError
from .common import upstream
from .conv import (
    ConvGeometry,
    conv_geometry,
    same_pads_at_run_time,
    spatial_size,
    transposed_conv_cropped,
)
from .table import Grad, register


def _static_spatial(g: Builder, name: str) -> list[int] | None:
    static = g.tensor(name).static_from(2)
    return None if static is None else list(static)


def _axis_divisors(
    size: int,
    out: int,
    kernel: int,
    stride: int,
    dilation: int,
    pad_begin: int,
    pad_end: int,
    include_pad: bool,
) -> np.ndarray:
    """Per output position along one axis, the count that onnxruntime divides the sum by."""
    starts = np.arange(out) * stride - pad_begin
    taps = starts[:, None] + dilation * np.arange(kernel)[None, :]
    low, high = (-pad_begin, size + pad_end) if include_pad else (0, size)
    return ((taps >= low) & (taps < high)).sum(axis=1)


def _divisor_map(
    geo: ConvGeometry, spatial: list[int], out: list[int], include_pad: bool
) -> np.ndarray:
    result = np.ones((), dtype=np.float64)
    for i, (size, n) in enumerate(zip(spatial, out)):
        axis = _axis_divisors(
            size,
            n,
            geo.kernel[i],
            geo.strides[i],
            geo.dilations[i],
            geo.pads_begin[i],
            geo.pads_end[i],
            include_pad,
        )
        result = np.multiply.outer(result, axis)
    # Windows wholly in the padding have a zero divisor and no input to reach.
    return 1.0 / np.maximum(result, 1)


def _spread_back(
    g: Builder,
    dy: str,
    geo: ConvGeometry,
    spatial: list[int],
    out: list[int],
    channels: int,
    like: str,
) -> str:
    """Adds each dy value onto every input position of its window: a ones ConvTranspose."""
    pads_end = list(geo.pads_end)
    padding = []
    for i, (size, n) in enumerate(zip(spatial, out)):
        produced = (
            geo.strides[i] * (n - 1)
            + geo.dilations[i] * (geo.kernel[i] - 1)
            + 1
            - geo.pads_begin[i]
            - pads_end[i]
        )
        # ceil_mode windows can run past the end padding: crop that overhang, it is
        # outside the input.
        if produced > size:
            pads_end[i] += produced - size
        padding.append(max(size - produced, 0))
    ones = np.ones((channels, 1, *geo.kernel), dtype=g.dtype_of(like))
    attrs: dict[str, list[int] | int] = dict(
        strides=geo.strides,
        dilations=geo.dilations,
        pads=geo.pads_begin + pads_end,
        group=channels,
    )
    if any(padding):
        attrs["output_padding"] = padding
    return g.ConvTranspose(dy, g.const(ones, hint="ones_kernel"), **attrs)


@register("AveragePool")
def average_pool(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    x, y = node.inputs[0], node.outputs[0]
    geo = conv_geometry(g, node, "", x, run_time_same=True)
    include_pad = bool(node.attr("count_include_pad", 0))
    spatial, out = _static_spatial(g, x), _static_spatial(g, y)
    shape = g.tensor(x).shape
    if shape is None:
        raise RewriteError(f"AveragePool {node.name!r}: the rank of {x!r} is unknown")
    channels = shape[1] if isinstance(shape[1], int) else None
    if spatial is None or out is None or channels is None or geo.same_at_run_time:
        return [_average_pool_at_run_time(g, dy, geo, x, y, channels, include_pad)]
    weights = _divisor_map(geo, spatial, out, include_pad).astype(g.dtype_of(x))
    scaled = g.Mul(dy, g.const(weights, hint="avgpool_inv_divisor"))
    return [_spread_back(g, scaled, geo, spatial, out, channels, x)]


def _ones(g: Builder, shape: str, like: str) -> str:
    one = np.ones(1, dtype=g.dtype_of(like))
    return g.ConstantOfShape(shape, value=numpy_helper.from_array(one))


def _average_pool_at_run_time(
    g: Builder,
    dy: str,
    geo: ConvGeometry,
    x: str,
    y: str,
    channels: int | None,
    include_pad: bool,
) -> str:
    """The backward for spatial sizes (or channels) known only at run time.

    Divisors: a ones-kernel Conv over a ones image of x's size, padded with ones where the
    padding counts (count_include_pad) and with zeros where it does not; s-1 more zeros
    at the end reach the windows that ceil_mode adds, cropped to y's size. The spread: a
    ones-kernel ConvTranspose over the whole padded input, x's extent cut out of it. Where
    the channel count is unknown, one single-channel kernel serves [N·C, 1, ...].
    """
    nd = len(geo.kernel)
    axes = g.ints(list(range(2, 2 + nd)))
    if geo.same_at_run_time:
        begin, end = same_pads_at_run_time(g, geo, x)
    else:
        begin, end = g.ints(geo.pads_begin), g.ints(geo.pads_end)
    x_spatial, y_spatial = spatial_size(g, x, nd), spatial_size(g, y, nd)
    image = _ones(g, g.Concat(g.ints([1, 1]), x_spatial, axis=0), x)
    padded = g.Pad(
        image,
        g.Concat(g.ints([0, 0]), begin, g.ints([0, 0]), end, axis=0),
        g.scalar_like(1.0 if include_pad else 0.0, x),
    )
    ones_kernel = g.const(np.ones((1, 1, *geo.kernel), dtype=g.dtype_of(x)), hint="ones_kernel")
    counts = g.Conv(
        padded,
        ones_kernel,
        strides=geo.strides,
        dilations=geo.dilations,
        pads=[0] * nd + [s - 1 for s in geo.strides],
    )
    counts = g.Slice(counts, g.ints([0] * nd), y_spatial, axes)
    # Windows wholly in the padding count nothing and reach no input.
    scaled = g.Div(dy, g.Max(counts, g.scalar_like(1.0, x)))
    if channels is not None:
        kernel = g.const(np.ones((channels, 1, *geo.kernel), dtype=g.dtype_of(x)), hint="ones")
        spread_geo = ConvGeometry(geo.kernel, geo.strides, geo.dilations, [], [], channels)
        return transposed_conv_cropped(g, scaled, kernel, spread_geo, begin, x_spatial)
    one_channel = g.Reshape(scaled, g.Concat(g.ints([-1, 1]), y_spatial, axis=0))
    spread_geo = ConvGeometry(geo.kernel, geo.strides, geo.dilations, [], [], 1)
    dx = transposed_conv_cropped(g, one_channel, ones_kernel, spread_geo, begin, x_spatial)
    return g.Reshape(dx, g.shape_of(x))


# The spreading Conv does (H·W)² multiply-adds per channel, Mul+Expand H·W: measured on
# onnxruntime CPU (2 threads), 0.06 against 0.04 ms at 7x7 (C=256), 0.33 against 0.07 ms at
# 20x20, 20 against 0.4 ms at 80x80 (C=96). Squeeze-excitation blocks pool whole feature
# maps of detectors (PP-OCRv4 det: up to 160x160), so above 16x16 Mul+Expand is used.
SPREAD_AS_CONV_MAX = 256


def spread_as_conv(g: Builder, dy: str, per_sample: Sequence[int]) -> str:
    """dy[N, C, 1, ...] spread evenly over x's spatial extent, as a depthwise Conv.

    Each output is dy·(1/count), one product as with Mul+Expand, but a Conv with a
    constant kernel of 1/count over the fully padded 1x1 input: onnxruntime CPU starts its
    blocked NCHWc layout at a Conv, so the gradient flowing back from a classifier head
    stays in that layout through the whole network (ResNet-50: every residual Sum then
    fuses into a backward conv) instead of being reordered at every block.
    """
    channels, spatial = per_sample[0], list(per_sample[1:])
    kernel = np.full((channels, 1, *spatial), 1.0 / float(np.prod(spatial)), np.float32)
    pads = [s - 1 for s in spatial]
    return g.Conv(dy, g.const(kernel, hint="w_spread"), group=channels, pads=pads + pads)


@register("GlobalAveragePool")
def global_average_pool(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    dy = upstream(node, dys)
    x = node.inputs[0]
    per_sample = g.tensor(x).static_from(1)
    if (
        per_sample is not None
        and g.dtype_of(x) == np.float32
        and 2 <= len(per_sample) <= 4
        and int(np.prod(per_sample[1:])) <= SPREAD_AS_CONV_MAX
    ):
        return [spread_as_conv(g, dy, per_sample)]
    x_shape = g.shape_of(x)
    static = g.tensor(x).static_shape
    if static is not None:
        count = g.scalar_like(1.0 / float(np.prod(static[2:])), x)
        return [g.Expand(g.Mul(dy, count), x_shape)]
    sizes = g.Slice(x_shape, g.ints([2]), g.ints([np.iinfo(np.int64).max]))
    count = g.CastLike(g.ReduceProd(sizes, keepdims=0), x)
    return [g.Expand(g.Div(dy, count), x_shape)]
