"""Resize. For given scales or sizes, Resize is linear in its input and separable per axis:
out = M_H · in · M_Wᵀ for an NCHW image. The backward is one step per resized axis with
the transposed matrix: dx = M_Hᵀ · dy · M_W. Each axis takes the cheapest exact form:

- left alone: scale 1 (or output size = input size) in a mode that does not move there;
- block sum: nearest upsampling by an integer factor that copies each input element to a
  block (asymmetric+floor, half_pixel+round_prefer_*, ...; checked on the runtime, see
  resize_measure.py): the adjoint sums each block, one AveragePool·s for all such axes,
  for any input size and 5-8x faster than the MatMuls on onnxruntime CPU;
- measured matrix: the axis length and the scale or output size are known at convert time;
  the matrix is measured on onnxruntime's own Resize (resize_measure.py), one MatMul;
- run-time matrix: otherwise (dynamic height and width, scales or sizes computed in the
  graph); built in the graph by the runtime's own Resize (resize_runtime.py), one MatMul.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..builder import Builder, Node
from ..errors import RewriteError
from ..model_info import Dim
from .common import upstream
from .resize_measure import Probe
from .resize_runtime import AxisFactor, runtime_matrix_t
from .table import Grad, register


@dataclass(frozen=True)
class _Parameters:
    """The node's scales (use_scales) or sizes input, and what is known of it."""

    use_scales: bool
    name: str
    listed: list[int]  # the axis each entry speaks for (opset 18 `axes`), in order
    entries: list[Entry]  # what is known of each entry (see _entries)

    def position(self, axis: int) -> int | None:
        return self.listed.index(axis) if axis in self.listed else None

    def known(self, axis: int) -> float | int | None:
        """The axis's constant scale or output size; None where computed or unlisted."""
        entry = self.entry(axis)
        return None if isinstance(entry, str) else entry

    def entry(self, axis: int) -> Entry:
        """The axis's entry: also a symbolic dimension where sizes come from a shape."""
        pos = self.position(axis)
        return None if pos is None else self.entries[pos]

    def factor(self, g: Builder, axis: int) -> AxisFactor:
        """The axis's scale or output size as a one-element tensor, constant where known."""
        known, pos = self.known(axis), self.position(axis)
        assert pos is not None, "unlisted axes are left alone"
        if known is not None:
            value = g.const([known], dtype=np.float32 if self.use_scales else np.int64)
        else:
            value = g.Slice(self.name, g.ints([pos]), g.ints([pos + 1]))
        return AxisFactor(self.use_scales, value)


Entry = float | int | str | None  # a constant, a symbolic dimension's name, or unknown


def _producer(g: Builder, name: str) -> Node | None:
    for proto in g.info.model.graph.node:
        if name in proto.output:
            return Node.from_proto(proto)
    return None


def _entries(g: Builder, name: str, length: int) -> list[Entry]:
    """What is known of each entry of a 1-D tensor of `length` entries.

    Exporters build scales or sizes in the graph: Concat(constant, computed) for scales,
    Shape(skip connection), or slices of shapes concatenated, for sizes. Constant entries,
    and sizes that are another tensor's (symbolic) dimensions, still tell which axes keep
    their size.
    """
    value = g.info.constant(name)
    if value is not None:
        return [v.item() for v in value.reshape(-1)]
    unknown: list[Entry] = [None] * length
    node = _producer(g, name)
    if node is None:
        return unknown
    if node.op_type == "Shape":
        dims = g.tensor(node.inputs[0]).shape
        if dims is None:
            return unknown
        picked: list[Entry] = []
        picked.extend(dims[slice(node.attr("start", 0), node.attr("end"))])
        return picked if len(picked) == length else unknown
    if node.op_type == "Slice" and len(node.inputs) in (3, 4):
        bounds = [g.info.constant_ints(i) for i in node.inputs[1:]]
        source = g.tensor(node.inputs[0]).static_shape
        if source is None or len(source) != 1 or any(b is None or len(b) != 1 for b in bounds):
            return unknown
        start, end = bounds[0][0], bounds[1][0]  # type: ignore[index]
        taken = _entries(g, node.inputs[0], source[0])[start:end]
        return taken if len(taken) == length else unknown
    if node.op_type == "Concat":
        parts: list[Entry] = []
        for piece in node.inputs:
            shape = g.tensor(piece).static_shape
            if shape is None or len(shape) != 1:
                return unknown
            parts += _entries(g, piece, shape[0])
        return parts if len(parts) == length else unknown
    return unknown


def _parameters(g: Builder, node: Node, rank: int) -> _Parameters:
    axes = node.attr("axes")
    listed = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    for index, use_scales in ((2, True), (3, False)):
        name = node.input(index)
        if not name:
            continue
        shape = g.tensor(name).shape
        value = g.info.constant(name)
        empty = (value is not None and value.size == 0) or (shape is not None and 0 in shape)
        if not empty:
            return _Parameters(use_scales, name, listed, _entries(g, name, len(listed)))
    raise RewriteError(f"Resize {node.name!r}: neither scales nor sizes are given")


def _check_supported(node: Node) -> None:
    if node.attr("mode", "nearest") == "tf_crop_and_resize" or (
        node.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    ):
        raise RewriteError(f"Resize {node.name!r}: tf_crop_and_resize is not supported")
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise RewriteError(
            f"Resize {node.name!r}: keep_aspect_ratio_policy="
            f"{node.attr('keep_aspect_ratio_policy')} is not supported"
        )


def _unit_scale(params: _Parameters, axis: int, n_in: Dim, n_out: Dim) -> bool:
    """Whether the axis is resized at scale exactly 1 (output size = input size)."""
    entry = params.entry(axis)
    if params.position(axis) is None:
        return True
    if params.use_scales:
        return entry == 1.0
    # With sizes the scale is out/in: equal sizes, however known, mean scale 1.
    return (entry is not None and entry == n_in) or (n_out is not None and n_out == n_in)


def _block_factor(params: _Parameters, axis: int, n_in: Dim) -> int | None:
    """The integer upsampling factor of the axis, where it is one known at convert time."""
    known = params.known(axis)
    if known is None:
        return None
    if params.use_scales:
        return int(known) if float(known) == int(known) and known >= 2 else None
    if isinstance(n_in, int) and n_in > 0 and int(known) % n_in == 0 and int(known) >= 2 * n_in:
        return int(known) // n_in
    return None


def _oriented(g: Builder, m: np.ndarray | str, like: str, transposed: bool) -> str:
    """Mᵀ[in, out] (transposed) or M[out, in] of a measured matrix (numpy, M) or a
    run-time one (a tensor holding Mᵀ)."""
    if isinstance(m, str):
        return m if transposed else g.Transpose(m, perm=[1, 0])
    value = np.ascontiguousarray(m.T if transposed else m).astype(g.dtype_of(like))
    return g.const(value, hint="resize_matrix")


def _along_axis(g: Builder, dy: str, m: np.ndarray | str, axis: int, rank: int, like: str) -> str:
    """Σ_out M[out, in]·dy[..., out, ...] along `axis`."""
    if axis == rank - 2:
        return g.MatMul(_oriented(g, m, like, transposed=True), dy)
    matrix = _oriented(g, m, like, transposed=False)
    if axis == rank - 1:
        return g.MatMul(dy, matrix)
    perm = [*range(axis), *range(axis + 1, rank), axis]
    inverse = [int(i) for i in np.argsort(perm)]
    return g.Transpose(g.MatMul(g.Transpose(dy, perm=perm), matrix), perm=inverse)


@register("Resize")
def resize(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    _check_supported(node)
    x, y = node.inputs[0], node.outputs[0]
    shape = g.tensor(x).shape
    if shape is None:
        raise RewriteError(f"Resize {node.name!r}: the rank of {x!r} is unknown")
    rank = len(shape)
    out_shape = g.tensor(y).shape or (None,) * rank
    params = _parameters(g, node, rank)
    probe = Probe(node, rank, params.use_scales, g.info.opset)
    nearest = node.attr("mode", "nearest") == "nearest"
    blocks = [1] * rank
    matrices: list[tuple[int, np.ndarray | str]] = []
    for axis in range(rank):
        n_in, n_out = shape[axis], out_shape[axis]
        if _unit_scale(params, axis, n_in, n_out) and probe.keeps_unit_scale():
            continue
        factor = _block_factor(params, axis, n_in) if nearest and axis >= 2 else None
        if factor is not None and probe.copies_blocks(factor):
            blocks[axis] = factor
            continue
        known = params.known(axis)
        if params.use_scales is False and known is None and isinstance(n_out, int):
            known = n_out
        if isinstance(n_in, int) and known is not None:
            matrix = probe.matrix(axis, n_in, known)
            if not (matrix.shape == (n_in, n_in) and np.array_equal(matrix, np.eye(n_in))):
                matrices.append((axis, matrix))
            continue
        # The identity's second axis is resized at scale 1: the spec samples it at i + 0.5
        # under tf_half_pixel_for_nn (onnxruntime does not), so that mode is refused.
        shifts = node.attr("coordinate_transformation_mode") == "tf_half_pixel_for_nn"
        if not nearest and (rank < 2 or shifts or not probe.keeps_unit_scale()):
            raise RewriteError(
                f"Resize {node.name!r}: axis {axis} has a dynamic size and mode "
                f"{node.attr('mode')} with coordinate_transformation_mode="
                f"{node.attr('coordinate_transformation_mode')} cannot be measured at run time"
            )
        matrices.append((axis, runtime_matrix_t(g, node, x, axis, rank, params.factor(g, axis))))
    dx = dy
    if any(b > 1 for b in blocks):
        # Sums each block: an average over it, times its size (exact for powers of two).
        kernel = blocks[2:]
        pooled = g.AveragePool(dx, kernel_shape=kernel, strides=kernel)
        dx = g.Mul(pooled, g.scalar_like(float(np.prod(kernel)), x))
    # Innermost axis first: for a downscale that shrinks the tensor early.
    for axis, m in reversed(matrices):
        dx = _along_axis(g, dx, m, axis, rank, x)
    return [dx, *([None] * (len(node.inputs) - 1))]
