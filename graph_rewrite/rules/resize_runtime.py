"""A Resize's interpolation matrix along one axis, built inside the explain graph at run
time, for axes whose length is known only then (detectors, OCR: dynamic height, width).

Resize is linear and acts on each axis alone, so the runtime's own Resize, applied with the
node's attributes and its scale (or output size) for that axis to a tensor whose rows are
unit vectors, yields the matrix exactly as that runtime interpolates. Nothing is measured
at convert time, so it holds on every runtime and for scales or sizes computed at run time.

- nearest: the matrix only selects. Resizing the ramp 0, 1, ..., n-1 gives each output's
  source index (exact in float32 below 2^24), and the matrix is [source == index].
- linear, cubic: an identity [n, n] whose second index lies along the resized axis and whose
  first along another axis, resized at scale 1 there (which these modes leave alone, except
  with tf_half_pixel_for_nn, which is refused).
"""

from __future__ import annotations

import numpy as np
import onnx

from ..builder import Builder, Node
from .common import onnx_type
from .resize_measure import interpolation_attrs


class AxisFactor:
    """How the forward Resize changes one axis: its scale, or its output size, as a 1-D
    tensor of one element (a constant where known, else read at run time)."""

    def __init__(self, use_scales: bool, value: str) -> None:
        self.use_scales = use_scales
        self.value = value


def _vector(g: Builder, rank: int, fill: str, at: dict[int, str]) -> str:
    """A 1-D tensor of `rank` entries: `fill` (a one-element constant) except where `at` says."""
    return g.Concat(*[at.get(i, fill) for i in range(rank)], axis=0)


def _resize_one_axis(
    g: Builder, node: Node, t: str, axis: int, rank: int, factor: AxisFactor, sizes: dict[int, str]
) -> str:
    """Resize of `t` along `axis` only; `sizes` gives the other axes' lengths in sizes mode."""
    attrs = interpolation_attrs(node)
    if factor.use_scales:
        scales = _vector(g, rank, g.const([1.0], dtype=np.float32), {axis: factor.value})
        return g.Resize(t, "", scales, **attrs)
    out = _vector(g, rank, g.ints([1]), {**sizes, axis: factor.value})
    return g.Resize(t, "", "", out, **attrs)


def runtime_matrix_t(
    g: Builder, node: Node, x: str, axis: int, rank: int, factor: AxisFactor
) -> str:
    """Mᵀ[in, out] of the forward Resize along `axis`, computed in the graph."""
    length = g.Slice(g.shape_of(x), g.ints([axis]), g.ints([axis + 1]))
    ramp = g.Range(g.ints(0), g.Squeeze(length, g.ints([0])), g.ints(1))
    column = g.Unsqueeze(ramp, g.ints([1]))  # [n, 1]
    elem = onnx_type(g, x)
    if node.attr("mode", "nearest") == "nearest":
        line_shape = [1] * rank
        line_shape[axis] = -1
        line = g.Reshape(g.Cast(ramp, to=onnx.TensorProto.FLOAT), g.ints(line_shape))
        picked = _resize_one_axis(g, node, line, axis, rank, factor, {})
        row = g.Reshape(picked, g.ints([1, -1]))  # [1, out]
        return g.Cast(g.Equal(g.Cast(column, to=onnx.TensorProto.FLOAT), row), to=elem)
    # The identity's rows run along `index`, an axis that the probe leaves at scale 1.
    index = 0 if axis != 0 else 1
    eye = g.Cast(g.Equal(column, g.Unsqueeze(ramp, g.ints([0]))), to=elem)
    others = [i for i in range(rank) if i not in (index, axis)]
    laid = g.Unsqueeze(eye, g.ints(others)) if others else eye
    resized = _resize_one_axis(g, node, laid, axis, rank, factor, {index: length})
    matrix = g.Squeeze(resized, g.ints(others)) if others else resized
    # Rows follow the lower of the two axes: [in, out] when index < axis, else [out, in].
    return matrix if index < axis else g.Transpose(matrix, perm=[1, 0])
