"""Ops that move values without changing them: their gradients move dY back.

Static shapes are used where known (constants fold, no Shape nodes); a symbolic dimension
(a dynamic batch) is read at run time with Shape/Gather, so it stays dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ..builder import Builder, Node
from ..errors import RewriteError
from .common import INT_MAX, INT_MIN, known_rank, scatter_add, unbroadcast, upstream, zeros_like
from .table import Grad, register


def _first(node: Node, dx: Grad) -> list[Grad]:
    """dx for the data input; shape, axes and index inputs get none."""
    return [dx, *([None] * (len(node.inputs) - 1))]


def _dim(g: Builder, x: str, axis: int) -> int | str:
    """The size of `x` along `axis`: a number when static, else a 1-D tensor read at run time."""
    shape = g.tensor(x).shape
    if shape is not None and isinstance(shape[axis], int):
        return int(shape[axis])  # type: ignore[arg-type]
    return g.Gather(g.Shape(x), g.ints([axis]))


def _shape_tensor(g: Builder, dims: Sequence[int | str]) -> str:
    """A 1-D int64 shape from numbers and 1-D runtime pieces; a constant when all static."""
    if all(isinstance(d, int) for d in dims):
        return g.ints([int(d) for d in dims])
    return g.Concat(*[d if isinstance(d, str) else g.ints([d]) for d in dims], axis=0)


def _pad_axis(g: Builder, t: str, axis: int, before: int | str, after: int | str, rank: int) -> str:
    """`t` with zeros added before and after along one axis (numbers, or 1-D run-time
    tensors of one entry)."""
    if before == 0 and after == 0:
        return t
    pads: list[int | str] = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    return g.Pad(t, _shape_tensor(g, pads))


def _narrow(g: Builder, t: str, axis: int, start: int, end: int) -> str:
    return g.Slice(t, g.ints([start]), g.ints([end]), g.ints([axis]))


def _flip(g: Builder, t: str, axes: Sequence[int]) -> str:
    n = len(axes)
    return g.Slice(t, g.ints([-1] * n), g.ints([INT_MIN] * n), g.ints(list(axes)), g.ints([-1] * n))


# -- pure relabelling ------------------------------------------------------------------


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    return _first(node, g.reshape_like(upstream(node, dys), node.inputs[0]))


@register("Transpose")
def transpose(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    perm = node.attr("perm")
    if perm is None:
        perm = list(reversed(range(known_rank(g, node, node.inputs[0]))))
    inverse = [int(i) for i in np.argsort(perm)]
    return [g.Transpose(upstream(node, dys), perm=inverse)]


@register("Expand")
def expand(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    return _first(node, unbroadcast(g, dy, node.inputs[0], node.outputs[0]))


@register("SpaceToDepth")
def space_to_depth(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    # A permutation: its adjoint is its inverse, DepthToSpace in DCR order.
    block = int(node.attr("blocksize"))
    return [g.DepthToSpace(upstream(node, dys), blocksize=block, mode="DCR")]


@register("DepthToSpace")
def depth_to_space(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    block = int(node.attr("blocksize"))
    if node.attr("mode", "DCR") == "DCR":
        return [g.SpaceToDepth(dy, blocksize=block)]
    # CRD: x → [N, C, b, b, H, W] → perm [0, 1, 4, 2, 5, 3] → [N, C, H·b, W·b]; undo it.
    y = node.outputs[0]
    split = [_dim(g, y, 0), _dim(g, y, 1), _dim(g, x, 2), block, _dim(g, x, 3), block]
    blocks = g.Reshape(dy, _shape_tensor(g, split))
    return [g.reshape_like(g.Transpose(blocks, perm=[0, 1, 3, 5, 2, 4]), x)]


# -- joining and splitting -------------------------------------------------------------


@register("Concat")
def concat(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, y = upstream(node, dys), node.outputs[0]
    axis = int(node.attr("axis")) % known_rank(g, node, y)
    sizes = [_dim(g, x, axis) for x in node.inputs]
    parts = g.op_multi("Split", [dy, _shape_tensor(g, sizes)], len(node.inputs), axis=axis)
    return [part if want else None for part, want in zip(parts, wants)]


@register("Split")
def split(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    # Outputs no gradient reached contribute zeros of their own shape.
    parts = [dy if dy is not None else zeros_like(g, out) for dy, out in zip(dys, node.outputs)]
    dx = g.Concat(*parts, axis=int(node.attr("axis", 0)))
    return _first(node, dx)


@register("Tile")
def tile(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """Y = X repeated r_i times along axis i: view dY as [r_0, n_0, r_1, n_1, ...], sum r_i."""
    dy, x = upstream(node, dys), node.inputs[0]
    repeats = g.info.constant_ints(node.input(1))
    if repeats is None:
        raise RewriteError(f"Tile {node.name!r}: computed repeats are not supported")
    dims: list[int | str] = []
    tiled_axes = []
    for axis, r in enumerate(repeats):
        if r != 1:
            tiled_axes.append(len(dims))
            dims.append(r)
        dims.append(_dim(g, x, axis))
    if not tiled_axes:
        return _first(node, dy)
    blocks = g.Reshape(dy, _shape_tensor(g, dims))
    return _first(node, g.ReduceSum(blocks, g.ints(tiled_axes), keepdims=0))


# -- slicing and indexing --------------------------------------------------------------


def _slice_range(n: int, start: int, end: int, step: int) -> range:
    """The indices an ONNX Slice takes along an axis of size n (the spec's clamping)."""
    if start < 0:
        start += n
    if end < 0:
        end += n
    if step > 0:
        start, end = min(max(start, 0), n), min(max(end, 0), n)
    else:
        start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
    return range(start, end, step)


def _slice_params(g: Builder, node: Node, rank: int) -> list[tuple[int, int, int, int]]:
    """(axis, start, end, step) per sliced axis, axes made non-negative."""
    names = [node.input(i) for i in (1, 2, 3, 4)]
    values = [g.info.constant_ints(n) if n else None for n in names]
    starts, ends, axes, steps = values
    if starts is None or ends is None or (names[2] and axes is None) or (names[3] and not steps):
        raise RewriteError(
            f"Slice {node.name!r}: computed starts/ends/axes/steps are not supported"
        )
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    return [(a % rank, s, e, st) for a, s, e, st in zip(axes, starts, ends, steps)]


@register("Slice")
def slice_(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """Scatter dY back: flip the reversed axes, spread strided ones, pad with zeros."""
    dy, x = upstream(node, dys), node.inputs[0]
    rank = known_rank(g, node, x)
    shape = list(g.tensor(x).shape or [])
    params = _slice_params(g, node, rank)
    pads = [0] * (2 * rank)
    flips, strided, dynamic = [], [], []
    for axis, start, end, step in params:
        n = shape[axis]
        if not isinstance(n, int):
            if step > 0:
                dynamic.append((axis, start, step))
            else:
                raise RewriteError(
                    f"Slice {node.name!r}: a negative step on the dynamic axis {axis} "
                    "is not supported"
                )
            continue
        taken = _slice_range(n, start, end, step)
        if len(taken) == 0:
            return _first(node, zeros_like(g, x))
        low = min(taken[0], taken[-1])
        span = (len(taken) - 1) * abs(step) + 1
        pads[axis], pads[rank + axis] = low, n - low - span
        if step < 0:
            flips.append(axis)
        if abs(step) > 1:
            strided.append((axis, abs(step), len(taken)))
    dx = _flip(g, dy, flips) if flips else dy
    for axis, stride, count in strided:
        dx = _spread(g, dx, axis, stride, count, rank)
    if any(pads):
        dx = g.Pad(dx, g.ints(pads))
    for axis, start, step in dynamic:
        dx = _unslice_at_run_time(g, dx, x, axis, start, step, rank)
    return _first(node, dx)


def _unslice_at_run_time(
    g: Builder, t: str, x: str, axis: int, start: int, step: int, rank: int
) -> str:
    """`t` (taken from `x` along a dynamic axis from `start` by `step` > 0) put back at its
    place in x's run-time extent, zeros elsewhere: spread by `step`, then padded to n.

    The first index taken is start clamped to [0, n] (start + n for a negative start); the
    spread's trailing gap can run past n, and is cut.
    """
    n = _dim(g, x, axis)
    assert isinstance(n, str), "only dynamic axes come here"
    if start >= 0:
        first = g.Min(g.ints([start]), n)
    else:
        first = g.Max(g.Add(n, g.ints([start])), g.ints([0]))
    taken = _dim(g, t, axis)
    length = taken if isinstance(taken, str) else g.ints([taken])
    if step > 1:
        gaps = _pad_axis(g, g.Unsqueeze(t, g.ints([axis + 1])), axis + 1, 0, step - 1, rank + 1)
        length = g.Mul(length, g.ints([step]))
        dims = [_dim(g, t, i) for i in range(axis)] + [length]
        dims += [_dim(g, t, i) for i in range(axis + 1, rank)]
        t = g.Reshape(gaps, _shape_tensor(g, dims))
    after = g.Max(g.Sub(g.Sub(n, first), length), g.ints([0]))
    pads: list[int | str] = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = first, after
    placed = g.Pad(t, _shape_tensor(g, pads))
    return g.Slice(placed, g.ints([0]), n, g.ints([axis])) if step > 1 else placed


def _spread(g: Builder, t: str, axis: int, stride: int, count: int, rank: int) -> str:
    """Puts stride-1 zeros between the `count` entries of `t` along `axis`."""
    gaps = _pad_axis(g, g.Unsqueeze(t, g.ints([axis + 1])), axis + 1, 0, stride - 1, rank + 1)
    dims: list[int | str] = [_dim(g, t, i) for i in range(axis)]
    dims.append(count * stride)
    dims += [_dim(g, t, i) for i in range(axis + 1, rank)]
    merged = g.Reshape(gaps, _shape_tensor(g, dims))
    return _narrow(g, merged, axis, 0, (count - 1) * stride + 1)


@register("Gather")
def gather(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    indices = g.info.constant(node.input(1))
    rank = known_rank(g, node, x)
    axis = int(node.attr("axis", 0)) % rank
    if indices is None:
        # Indices computed at run time (dynamo's as_strided builds them from shapes).
        return _first(node, _scatter_add_runtime(g, dy, x, node.input(1), axis, rank))
    n = _dim(g, x, axis)
    if isinstance(n, int):
        indices = np.where(indices < 0, indices + n, indices)
        if indices.ndim == 0:
            # One index (x[:, 0] of a class token): the row goes back between zeros.
            i = int(indices)
            return _first(
                node, _pad_axis(g, g.Unsqueeze(dy, g.ints([axis])), axis, i, n - 1 - i, rank)
            )
    return _first(node, _scatter_add(g, dy, x, indices.astype(np.int64), axis, rank))


def _scatter_add(g: Builder, dy: str, x: str, indices: np.ndarray, axis: int, rank: int) -> str:
    """Adds each gathered slice of dY back at its index; repeated indices add up."""
    count = int(indices.size)
    dims: list[int | str] = [_dim(g, x, i) for i in range(rank)]
    dims[axis] = count
    flat = g.Reshape(dy, _shape_tensor(g, dims))
    along = indices.reshape([count if i == axis else 1 for i in range(rank)])
    where = g.Expand(g.const(along), g.Shape(flat))
    return scatter_add(g, zeros_like(g, x), where, flat, axis, like=x)


def _scatter_add_runtime(g: Builder, dy: str, x: str, indices: str, axis: int, rank: int) -> str:
    """_scatter_add for indices known only at run time: negatives are wrapped by the
    axis length, any index shape is flattened along `axis` (dY's axes there follow it)."""
    n = g.Gather(g.Shape(x), g.ints([axis]))
    flat_idx = g.Reshape(g.Cast(indices, to=onnx.TensorProto.INT64), g.ints([-1]))
    wrapped = g.Where(g.Less(flat_idx, g.ints([0])), g.Add(flat_idx, n), flat_idx)
    dims: list[int | str] = [_dim(g, x, i) for i in range(rank)]
    dims[axis] = -1
    flat = g.Reshape(dy, _shape_tensor(g, dims))
    along_shape = [-1 if i == axis else 1 for i in range(rank)]
    where = g.Expand(g.Reshape(wrapped, g.ints(along_shape)), g.Shape(flat))
    return scatter_add(g, zeros_like(g, x), where, flat, axis, like=x)


# -- padding ---------------------------------------------------------------------------


def _pad_amounts(g: Builder, node: Node, rank: int) -> tuple[list[int], list[int]]:
    """(before, after) per axis, from the pads input and the optional axes input."""
    pads = g.info.constant_ints(node.input(1))
    if pads is None:
        raise RewriteError(f"Pad {node.name!r}: computed pads are not supported")
    axes_name = node.input(3)
    axes = g.info.constant_ints(axes_name) if axes_name else list(range(rank))
    if axes is None:
        raise RewriteError(f"Pad {node.name!r}: computed axes are not supported")
    before, after = [0] * rank, [0] * rank
    k = len(axes)
    for i, axis in enumerate(axes):
        before[axis % rank], after[axis % rank] = pads[i], pads[k + i]
    return before, after


@register("Pad")
def pad(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    rank = known_rank(g, node, x)
    before, after = _pad_amounts(g, node, rank)
    mode = node.attr("mode", "constant")
    if mode == "constant":
        return _first(node, _unpad_constant(g, dy, before, after, rank))
    if min(before + after) < 0:
        raise RewriteError(f"Pad {node.name!r}: negative pads are only supported in constant mode")
    dx = dy
    for axis in range(rank):
        if before[axis] or after[axis]:
            n = _dim(g, x, axis)
            dx = _fold_border(g, dx, mode, axis, before[axis], after[axis], n, rank)
    return _first(node, dx)


def _unpad_constant(g: Builder, dy: str, before: list[int], after: list[int], rank: int) -> str:
    """Crops what was padded; pads back with zeros what a negative pad cropped."""
    axes = [a for a in range(rank) if before[a] > 0 or after[a] > 0]
    if axes:
        starts = [max(before[a], 0) for a in axes]
        ends = [-after[a] if after[a] > 0 else INT_MAX for a in axes]
        dy = g.Slice(dy, g.ints(starts), g.ints(ends), g.ints(axes))
    restore = [max(-p, 0) for p in before] + [max(-p, 0) for p in after]
    return g.Pad(dy, g.ints(restore)) if any(restore) else dy


def _fold_border(
    g: Builder, t: str, mode: str, axis: int, before: int, after: int, n: int | str, rank: int
) -> str:
    """Adds the gradient of each padded border onto the input entries it was copied from.

    edge: every border entry copies the nearest end entry; reflect: the border mirrors
    x[1 : before+1] and x[n-1-after : n-1]; wrap: it repeats x[n-before:] and x[:after].
    The length n is a number, or a 1-D tensor read at run time (dynamic height and width).
    """

    def less(k: int) -> int | str:
        return n - k if isinstance(n, int) else g.Sub(n, g.ints([k]))

    middle = g.Slice(t, g.ints([before]), g.ints([-after if after else INT_MAX]), g.ints([axis]))
    parts = [middle]
    if before:
        head = _narrow(g, t, axis, 0, before)
        if mode == "edge":
            parts.append(_pad_axis(g, _sum_axis(g, head, axis), axis, 0, less(1), rank))
        elif mode == "reflect":
            parts.append(_pad_axis(g, _flip(g, head, [axis]), axis, 1, less(1 + before), rank))
        else:
            parts.append(_pad_axis(g, head, axis, less(before), 0, rank))
    if after:
        tail = _narrow(g, t, axis, -after, INT_MAX)
        if mode == "edge":
            parts.append(_pad_axis(g, _sum_axis(g, tail, axis), axis, less(1), 0, rank))
        elif mode == "reflect":
            parts.append(_pad_axis(g, _flip(g, tail, [axis]), axis, less(1 + after), 1, rank))
        else:
            parts.append(_pad_axis(g, tail, axis, 0, less(after), rank))
    return g.Sum(*parts)


def _sum_axis(g: Builder, t: str, axis: int) -> str:
    return g.ReduceSum(t, g.ints([axis]), keepdims=1)
