"""What the rules may ask about the forward model: tensor types, static shapes, constants.

The model is read once it is prepared (prepare.py: opset raised, shapes inferred), so the
rules see one form of each op and static axes wherever they are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import RewriteError

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int  # onnx.TensorProto.FLOAT, ...; 0 where unknown
    shape: tuple[Dim, ...] | None  # None where even the rank is unknown

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known number, else None."""
        return self.static_from(0)

    def static_from(self, axis: int) -> tuple[int, ...] | None:
        """The dimensions from `axis` on when all are known numbers, else None.

        static_from(1) is a tensor's per-sample shape, known even where the batch is not.
        """
        if self.shape is None or not all(isinstance(d, int) for d in self.shape[axis:]):
            return None
        return tuple(int(d) for d in self.shape[axis:])  # type: ignore[arg-type]

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type or onnx.TensorProto.FLOAT))


def ai_onnx_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise RewriteError("the model imports no ai.onnx opset")


def _info_from_type(tp: onnx.TypeProto) -> TensorInfo:
    if not tp.HasField("tensor_type"):
        return TensorInfo(0, None)
    tt = tp.tensor_type
    if not tt.HasField("shape"):
        return TensorInfo(tt.elem_type, None)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tt.elem_type, tuple(dims))


class ModelInfo:
    """Read-only facts about one (normalised) forward graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.opset = ai_onnx_opset(model)
        graph = model.graph
        self._infos: dict[str, TensorInfo] = {}
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            self._infos[vi.name] = _info_from_type(vi.type)
        self._constants: dict[str, np.ndarray] = {}
        # Weights are decoded on first use: most (a ResNet's BatchNorm stats folded away,
        # weights only ConvTranspose reads) are never needed as numpy arrays.
        self._initializers = {init.name: init for init in graph.initializer}
        for init in graph.initializer:
            self._infos[init.name] = TensorInfo(init.data_type, tuple(int(d) for d in init.dims))
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = _constant_node_value(node)
                if value is not None:
                    self._constants[node.output[0]] = value
        self.initializer_names = {init.name for init in graph.initializer}
        self._producers: dict[str, onnx.NodeProto] | None = None
        # The nodes a QDQ model's weight goes through: DequantizeLinear(QuantizeLinear(
        # float constant)) or of an integer constant, an Identity where an exporter shared it.
        self._quantizers = {
            node.output[0]: node
            for node in graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Identity")
            and node.domain in ("", "ai.onnx")
        }

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node whose output `name` is, None for an input or initializer."""
        if self._producers is None:
            self._producers = {o: n for n in self.model.graph.node for o in n.output if o}
        return self._producers.get(name)

    def info(self, name: str) -> TensorInfo:
        return self._infos.get(name, TensorInfo(0, None))

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None (it is computed)."""
        if not name:
            return None
        if name not in self._constants and name in self._initializers:
            self._constants[name] = numpy_helper.to_array(self._initializers[name])
        return self._constants.get(name)

    def weight(self, name: str) -> np.ndarray | None:
        """`constant(name)`, or the value of a QDQ model's weight: DequantizeLinear of a
        constant, or of QuantizeLinear of a constant, through Identities, computed as the
        ops define them ((q - zero) · scale; saturate(round(w / scale) + zero), half to
        even) in the scale's float type. Only for rules that read a weight: folding passes
        must not see a quantized weight as a float one, or the forward model would change."""
        value = self.constant(name)
        node = self._quantizers.get(name)
        if value is not None or node is None:
            return value
        source = self.weight(node.input[0])
        if source is None or node.op_type == "Identity":
            return source
        return self._affine(node, source, dequantize=node.op_type == "DequantizeLinear")

    def _affine(self, node: onnx.NodeProto, x: np.ndarray, dequantize: bool) -> np.ndarray | None:
        scale = self.constant(node.input[1])
        zero_name = node.input[2] if len(node.input) > 2 else ""
        zero = self.constant(zero_name) if zero_name else np.zeros((), np.uint8)
        if scale is None or zero is None or _attr_int(node, "block_size"):
            return None
        shape: list[int] = []
        if scale.ndim == 1 and x.ndim:  # per axis
            shape = [1] * x.ndim
            shape[_attr_int(node, "axis", 1) % x.ndim] = -1
        s = scale.reshape(shape) if shape else scale
        z = (zero.reshape(shape) if shape and zero.ndim else zero).astype(np.int64)
        if dequantize:
            return (x.astype(np.int64) - z).astype(scale.dtype) * s
        if not np.issubdtype(zero.dtype, np.integer) or _attr_int(node, "output_dtype"):
            return None  # float8 or an output type the zero point does not give
        info = np.iinfo(zero.dtype)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            level = np.round(x.astype(scale.dtype) / s).astype(np.float64) + z
        return np.clip(level, info.min, info.max).astype(zero.dtype)

    def initializer(self, name: str) -> onnx.TensorProto | None:
        """The initializer named `name` as stored, else None (a Constant node or computed)."""
        return self._initializers.get(name)

    def constant_ints(self, name: str) -> list[int] | None:
        value = self.constant(name)
        return None if value is None else [int(v) for v in value.reshape(-1)]

    def is_float(self, name: str) -> bool:
        """Whether a gradient can flow through the tensor; unknown types count as float."""
        elem = self.info(name).elem_type
        return elem in (0, *FLOAT_TYPES)


FLOAT_TYPES: Sequence[int] = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
)


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


def _attr_int(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default
