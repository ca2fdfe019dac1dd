"""Emits backward-pass nodes, so that a rule reads like the maths: `g.Mul(dy, g.Sign(y))`.

Every tensor is a name (str). Constants become initializers; names are made unique with
a counter under one prefix so the backward pass never collides with forward names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .model_info import ModelInfo, TensorInfo
from .targets import Target


@dataclass
class Node:
    """A forward node as the rules see it: attributes already decoded to Python values."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    proto: onnx.NodeProto | None = None

    @classmethod
    def from_proto(cls, proto: onnx.NodeProto) -> Node:
        attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        for key, value in attrs.items():
            if isinstance(value, bytes):
                attrs[key] = value.decode()
        return cls(proto.op_type, proto.name, list(proto.input), list(proto.output), attrs, proto)

    def input(self, i: int) -> str:
        """The i-th input's name, or "" when it is absent (optional inputs)."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


class Builder:
    """Appends nodes and initializers for the backward pass of one graph."""

    def __init__(
        self, info: ModelInfo, target: Target = "portable", prefix: str = "onnxplain"
    ) -> None:
        self.info = info
        # Rules pick runtime-specific formulations only where the target names a runtime.
        self.target = target
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        # Initializers that repeat a stored one under a new name: (new name, stored tensor),
        # copied once, straight into the explain model (write_initializers).
        self.copies: list[tuple[str, onnx.TensorProto]] = []
        # Tensors made here, each with the forward tensor whose shape it has (gradients,
        # broadcasts): gradient_shapes.py declares those shapes for the runtime.
        self.shaped_like: dict[str, str] = {}
        self._counter = 0
        self._shape_cache: dict[str, str] = {}
        self._const_cache: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        taken = {n for node in info.model.graph.node for n in (*node.input, *node.output)}
        taken |= {t.name for t in info.model.graph.initializer}
        taken |= {v.name for v in info.model.graph.input}
        self._taken = taken

    # -- names -------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            self._counter += 1
            name = f"{self.prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    # -- nodes -------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        """Emits one node with one output and returns the output's name."""
        return self.op_multi(op_type, list(inputs), 1, **attrs)[0]

    def op_multi(
        self, op_type: str, inputs: Sequence[str], n_outputs: int, **attrs: Any
    ) -> list[str]:
        outputs = [self.fresh(op_type.lower()) for _ in range(n_outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(
            op_type, list(inputs), outputs, name=self.fresh(f"{op_type}_node"), **attrs
        )
        self.nodes.append(node)
        return outputs

    def __getattr__(self, op_type: str) -> Callable[..., str]:
        # Capitalised attribute names are ONNX ops: g.Mul(a, b), g.Transpose(x, perm=[1, 0]).
        if not op_type[:1].isupper():
            raise AttributeError(op_type)
        return lambda *inputs, **attrs: self.op(op_type, *inputs, **attrs)

    # -- constants ---------------------------------------------------------------------
    def const(self, value: Any, dtype: np.dtype | type | None = None, hint: str = "const") -> str:
        """An initializer holding `value` (deduplicated by content)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._const_cache:
            name = self.fresh(hint)
            self.initializers.append(numpy_helper.from_array(array, name))
            self._const_cache[key] = name
        return self._const_cache[key]

    def forget_constants(self, names: set[str]) -> None:
        """Drops `names` from the cache of const(), once their initializers are gone."""
        self._const_cache = {k: v for k, v in self._const_cache.items() if v not in names}

    def copy_of(self, tensor: onnx.TensorProto, hint: str = "copy") -> str:
        """A new initializer with the bytes of `tensor`: nothing decoded, nothing hashed
        (const() would hash the whole value, 411 MB for VGG-19's first Gemm weight), and
        copied once, when written (copying here, then into the graph, cost 1.8 s there)."""
        name = self.fresh(hint)
        self.copies.append((name, tensor))
        return name

    def write_initializers(self, graph: onnx.GraphProto) -> None:
        """Appends the backward pass's initializers, the copies included, to `graph`."""
        graph.initializer.extend(self.initializers)
        for name, stored in self.copies:
            copy = graph.initializer.add()
            copy.CopyFrom(stored)
            copy.name = name

    def ints(self, values: Sequence[int] | int) -> str:
        """An int64 constant, as the shape, axes and index inputs of ONNX ops want."""
        return self.const(np.asarray(values, dtype=np.int64), hint="ints")

    def scalar_like(self, value: float, like: str) -> str:
        """A scalar constant of the float type of tensor `like`."""
        return self.const(np.asarray(value, dtype=self.dtype_of(like)), hint="scalar")

    # -- facts about forward tensors ---------------------------------------------------
    def tensor(self, name: str) -> TensorInfo:
        return self.info.info(name)

    def dtype_of(self, name: str) -> np.dtype:
        return self.info.info(name).numpy_dtype

    def shape_of(self, name: str) -> str:
        """A 1-D int64 tensor with the runtime shape of `name` (a constant when static)."""
        static = self.info.info(name).static_shape
        if static is not None:
            return self.ints(list(static))
        if name not in self._shape_cache:
            self._shape_cache[name] = self.Shape(name)
        return self._shape_cache[name]

    def same_shape(self, made: str, like: str) -> str:
        """`made` (a tensor made here), noted as having forward tensor `like`'s shape."""
        self.shaped_like.setdefault(made, like)
        return made

    def reshape_like(self, x: str, like: str) -> str:
        return self.Reshape(x, self.shape_of(like))
