"""Convert-time measurements of a Resize node: its interpolation matrix along one axis,
and whether it leaves an axis alone or copies each input into a block.

Each is read off onnxruntime's own Resize with the node's attributes (mode, coordinate
transform, rounding, cubic coefficient...) run on unit vectors, so the backward matches
the runtime's forward exactly, quirks included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from ..builder import Node
from ..errors import RewriteError

# Attributes that shape the interpolation itself; probes (and the run-time matrices of
# resize_runtime.py) copy them.
INTERPOLATION_ATTRS = (
    "mode",
    "coordinate_transformation_mode",
    "nearest_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "antialias",
)

# Input lengths on which a block copy is checked. For an integer factor the source of
# output s·k + r is k + c(r), c independent of k and n, so a pattern that holds on these
# (ends clamped included) holds on every length.
_BLOCK_PROBE_LENGTHS = (1, 2, 3, 4, 7)


def interpolation_attrs(node: Node) -> dict[str, Any]:
    return {k: node.attrs[k] for k in INTERPOLATION_ATTRS if k in node.attrs}


def _probe_model(node: Node, rank: int, use_scales: bool, opset: int, elem: int) -> bytes:
    inputs = ["x", "", "scales"] if use_scales else ["x", "", "", "sizes"]
    second = (
        helper.make_tensor_value_info("scales", onnx.TensorProto.FLOAT, [rank])
        if use_scales
        else helper.make_tensor_value_info("sizes", onnx.TensorProto.INT64, [rank])
    )
    graph = helper.make_graph(
        [helper.make_node("Resize", inputs, ["y"], **interpolation_attrs(node))],
        "resize_probe",
        [helper.make_tensor_value_info("x", elem, [None] * rank), second],
        [helper.make_tensor_value_info("y", elem, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


class Probe:
    """The node's Resize on onnxruntime, every axis but one of size 1, opened on first use."""

    def __init__(self, node: Node, rank: int, use_scales: bool, opset: int) -> None:
        self.node, self.rank, self.use_scales, self.opset = node, rank, use_scales, opset
        self._session: tuple[ort.InferenceSession, type] | None = None
        self._keeps_unit_scale: bool | None = None

    def _open(self) -> tuple[ort.InferenceSession, type]:
        if self._session is not None:
            return self._session
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # float64 where onnxruntime has the kernel, so the weights are not rounded to float32.
        for dtype, elem in (
            (np.float64, onnx.TensorProto.DOUBLE),
            (np.float32, onnx.TensorProto.FLOAT),
        ):
            try:
                blob = _probe_model(self.node, self.rank, self.use_scales, self.opset, elem)
                session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
            except Exception:  # onnxruntime lacks the kernel for this type
                continue
            self._session = (session, dtype)
            return self._session
        raise RewriteError(
            f"Resize {self.node.name!r}: onnxruntime cannot run this Resize to measure it"
        )

    def matrix(self, axis: int, size: int, param: float | int) -> np.ndarray:
        """M[out, in] along `axis` of length `size`, at scale (or output size) `param`.

        Axes of size 1 are left unchanged by every mode (all taps clamp to the one element).
        """
        session, dtype = self._open()
        shape = [1] * self.rank
        shape[axis] = size
        factor = np.ones(self.rank, dtype=np.float32 if self.use_scales else np.int64)
        factor[axis] = param
        columns = []
        for i in range(size):
            unit: np.ndarray = np.zeros(size, dtype=dtype)
            unit[i] = 1.0
            feeds = {"x": unit.reshape(shape), "scales" if self.use_scales else "sizes": factor}
            columns.append(session.run(["y"], feeds)[0].reshape(-1))
        return np.stack(columns, axis=1)

    def keeps_unit_scale(self) -> bool:
        """Whether scale 1 (or output size = input size) leaves an axis as it is.

        Not for every mode: tf_half_pixel_for_nn samples at i + 0.5, which
        round_prefer_ceil, ceil and the interpolating modes move to the next element.
        """
        if self._keeps_unit_scale is None:
            n = 5
            unit = self.matrix(self.rank - 1, n, 1.0 if self.use_scales else n)
            self._keeps_unit_scale = bool(np.array_equal(unit, np.eye(n)))
        return self._keeps_unit_scale

    def copies_blocks(self, factor: int) -> bool:
        """Whether each input element is copied to exactly `factor` consecutive outputs."""
        for n in _BLOCK_PROBE_LENGTHS:
            param = float(factor) if self.use_scales else factor * n
            block = np.kron(np.eye(n), np.ones((factor, 1)))
            if not np.array_equal(self.matrix(self.rank - 1, n, param), block):
                return False
        return True
