"""Per-channel gates (squeeze-excitation: y = x·s, x [N, C, H, W], s [N, C, 1, 1]) and the
spatial mean before them, with backward ops that onnxruntime CPU keeps in its blocked NCHWc
layout.

That layout holds an elementwise Mul or Add only when both inputs are blocked and of one
shape, so the plain gradients (dy·s broadcast, ReduceSum of dy·x over H and W, Expand of
the mean's gradient) each take the block's full-size gradient out of it and back: three
reorders of a full tensor per gate, 16 gates in EfficientNet-B0. Here the broadcasts are a
nearest Resize of the [N, C, 1, 1] tensor, which onnxruntime runs blocked (its NCHWc
Upsample, for integer scales, the asymmetric transform and floor rounding: every output then
copies the one input), the sum over H and W a GlobalAveragePool scaled back by H·W, and
the scalings depthwise 1x1 Convs: all exact copies or one rounding from the plain forms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..builder import Builder
from .common import channel_affine
from .table import Grad


def gate_grads(
    g: Builder, dy: str, a: str, b: str, y: str, wants: Sequence[bool]
) -> list[Grad] | None:
    """The gradients of y = a·b for a gate (see `gate_operands`), else None."""
    gate = gate_operands(g, a, b, y)
    if gate is None:
        return None
    wide, narrow = gate
    channels, *size = g.tensor(y).static_from(1) or ()
    grads: list[Grad] = []
    for operand, wanted in zip((a, b), wants):
        if not wanted:
            grads.append(None)
        elif operand == wide:
            grads.append(g.Mul(dy, g.same_shape(spread(g, narrow, size), y)))
        else:
            grads.append(spatial_sum(g, g.Mul(dy, wide), channels, size))
    return grads


def gate_operands(g: Builder, a: str, b: str, y: str) -> tuple[str, str] | None:
    """(wide, narrow) where y = a·b is a float32 [N, C, H, W] tensor gated by an
    [N, C, 1, 1] one (same N; C, H and W known numbers), else None."""
    y_shape = g.tensor(y).shape
    if y_shape is None or len(y_shape) != 4 or g.dtype_of(y) != np.float32:
        return None
    if g.tensor(y).static_from(1) is None or tuple(y_shape[2:]) == (1, 1):
        return None
    for wide, narrow in ((a, b), (b, a)):
        wide_shape, narrow_shape = g.tensor(wide).shape, g.tensor(narrow).shape
        if wide_shape is None or narrow_shape is None or len(narrow_shape) != 4:
            continue
        if list(wide_shape) == list(y_shape) and list(narrow_shape) == [*y_shape[:2], 1, 1]:
            return wide, narrow
    return None


def spread(g: Builder, t: str, size: Sequence[int]) -> str:
    """t [N, C, 1, 1] copied over an H x W grid (`size`), as a nearest Resize."""
    scales = g.const(np.array([1.0, 1.0, *size], np.float32), hint="spread_scales")
    return g.Resize(
        t,
        "",
        scales,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )


def spatial_sum(g: Builder, t: str, channels: int, size: Sequence[int]) -> str:
    """Σ over H and W of t [N, C, H, W], kept as [N, C, 1, 1]: the blocked
    GlobalAveragePool, scaled back by H·W."""
    return channel_affine(g, g.GlobalAveragePool(t), channels, float(np.prod(size)))


def mean_spread(g: Builder, dy: str, channels: int, size: Sequence[int]) -> str:
    """The gradient of a spatial mean: dy [N, C, 1, 1]/(H·W) over the H x W grid, as the
    scaling Conv and the blocked Resize. (Pooling's one-Conv spread, `spread_as_conv`, does
    H·W multiply-adds per output: at EfficientNet-B0's 14x14 and 7x7 gates that made its
    Convs 3.6 ms slower than this.)"""
    return spread(g, channel_affine(g, dy, channels, 1.0 / float(np.prod(size))), size)
