"""Resize. For fixed scales or sizes, Resize is linear in its input and separable per axis:
out = M_H · in · M_Wᵀ for an NCHW image. The backward is then one MatMul per resized axis
with the transposed matrix: dx = M_Hᵀ · dy · M_W.

Each axis's matrix is measured at convert time by running onnxruntime's own Resize (same
mode, coordinate transform, rounding, cubic coefficient...) on the unit vectors of that
axis, so the backward matches the runtime's forward exactly, quirks included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from ..builder import Builder, Node
from ..errors import RewriteError
from . import Grad, register
from .common import upstream

# Attributes that shape the interpolation itself; the probe copies them.
_PROBE_ATTRS = (
    "mode",
    "coordinate_transformation_mode",
    "nearest_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "antialias",
)


def _full_rank(values: np.ndarray, axes: list[int] | None, rank: int, fill: float) -> np.ndarray:
    """Scales or sizes given for `axes` only (opset 18+), spread to every axis."""
    if axes is None:
        return values
    full = np.full(rank, fill, dtype=values.dtype)
    for axis, value in zip(axes, values):
        full[axis % rank] = value
    return full


def _probe_model(node: Node, rank: int, use_scales: bool, opset: int, elem: int) -> bytes:
    attrs = {k: node.attrs[k] for k in _PROBE_ATTRS if k in node.attrs}
    inputs = ["x", "", "scales"] if use_scales else ["x", "", "", "sizes"]
    second = (
        helper.make_tensor_value_info("scales", onnx.TensorProto.FLOAT, [rank])
        if use_scales
        else helper.make_tensor_value_info("sizes", onnx.TensorProto.INT64, [rank])
    )
    graph = helper.make_graph(
        [helper.make_node("Resize", inputs, ["y"], **attrs)],
        "resize_probe",
        [helper.make_tensor_value_info("x", elem, [None] * rank), second],
        [helper.make_tensor_value_info("y", elem, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _probe_session(
    node: Node, rank: int, use_scales: bool, opset: int
) -> tuple[ort.InferenceSession, type]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # float64 where onnxruntime has the kernel, so the weights are not rounded to float32.
    for dtype, elem in (
        (np.float64, onnx.TensorProto.DOUBLE),
        (np.float32, onnx.TensorProto.FLOAT),
    ):
        try:
            blob = _probe_model(node, rank, use_scales, opset, elem)
            return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"]), dtype
        except Exception:  # onnxruntime lacks the kernel for this type
            continue
    raise RewriteError(f"Resize {node.name!r}: onnxruntime cannot run this Resize to measure it")


def _axis_matrix(
    node: Node, rank: int, axis: int, size: int, param: float | int, use_scales: bool, opset: int
) -> np.ndarray:
    """M[out, in] along one axis: Resize of each unit vector, every other axis of size 1.

    Axes of size 1 are left unchanged by every mode (all taps clamp to the one element).
    """
    sess, dtype = _probe_session(node, rank, use_scales, opset)
    shape = [1] * rank
    shape[axis] = size
    factor = np.ones(rank, dtype=np.float32) if use_scales else np.ones(rank, dtype=np.int64)
    factor[axis] = param
    columns = []
    for i in range(size):
        unit: np.ndarray = np.zeros(size, dtype=dtype)
        unit[i] = 1.0
        feeds = {"x": unit.reshape(shape), "scales" if use_scales else "sizes": factor}
        columns.append(sess.run(["y"], feeds)[0].reshape(-1))
    return np.stack(columns, axis=1)


def _resize_parameters(g: Builder, node: Node, rank: int) -> tuple[np.ndarray, bool]:
    """The node's full-rank scales (True) or sizes (False), which must be constants."""
    scales_name, sizes_name = node.input(2), node.input(3)
    scales = g.info.constant(scales_name) if scales_name else None
    sizes = g.info.constant(sizes_name) if sizes_name else None
    axes = node.attr("axes")
    axes = None if axes is None else [int(a) for a in axes]
    if scales is not None and scales.size > 0:
        return _full_rank(scales.astype(np.float32), axes, rank, 1.0), True
    if sizes is not None and sizes.size > 0:
        return _full_rank(sizes.astype(np.int64), axes, rank, -1), False
    raise RewriteError(
        f"Resize {node.name!r}: the backward needs constant scales or sizes (initializers or "
        "Constant nodes); this one computes them at run time"
    )


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


def _apply_transposed(
    g: Builder, dy: str, matrix: np.ndarray, axis: int, rank: int, like: str
) -> str:
    """Σ_out M[out, in]·dy[..., out, ...] along `axis`."""
    dtype = g.dtype_of(like)
    if axis == rank - 1:
        return g.MatMul(dy, g.const(matrix.astype(dtype), hint="resize_matrix"))
    if axis == rank - 2:
        return g.MatMul(
            g.const(np.ascontiguousarray(matrix.T).astype(dtype), hint="resize_matrix_t"), dy
        )
    perm = [*range(axis), *range(axis + 1, rank), axis]
    inverse = [int(i) for i in np.argsort(perm)]
    moved = g.MatMul(
        g.Transpose(dy, perm=perm), g.const(matrix.astype(dtype), hint="resize_matrix")
    )
    return g.Transpose(moved, perm=inverse)


@register("Resize")
def resize(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    _check_supported(node)
    x = node.inputs[0]
    shape = g.tensor(x).shape
    if shape is None:
        raise RewriteError(f"Resize {node.name!r}: the rank of {x!r} is unknown")
    rank = len(shape)
    params, use_scales = _resize_parameters(g, node, rank)
    dx = dy
    # Innermost axis first: for a downscale that shrinks the tensor early.
    for axis in reversed(range(rank)):
        size = shape[axis]
        keeps_size = params[axis] == 1.0 if use_scales else params[axis] in (-1, size)
        if not isinstance(size, int):
            if keeps_size:
                continue  # a dynamic batch axis: taken to be left as it is
            raise RewriteError(
                f"Resize {node.name!r}: axis {axis} is resized but its size is not static"
            )
        matrix = _axis_matrix(node, rank, axis, size, params[axis], use_scales, g.info.opset)
        # Even at scale 1 some modes shift (tf_half_pixel_for_nn with round_prefer_ceil):
        # only a measured identity is skipped.
        if matrix.shape == (size, size) and np.array_equal(matrix, np.eye(size)):
            continue
        dx = _apply_transposed(g, dx, matrix, axis, rank, x)
    return [dx, *([None] * (len(node.inputs) - 1))]
