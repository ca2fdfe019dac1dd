"""What the rules may ask about the forward model: tensor types, static shapes, constants.

The model is normalised first (`normalise`): its ai.onnx opset is raised to at least
`MIN_OPSET`, so rules read one form of each op (axes, pads and clip bounds as inputs, not
attributes, except where even the newest opset keeps an attribute), and shapes are inferred
so that rules can pick static axes where they are known.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

from .errors import RewriteError
from .shapes import InputShapes, fix_input_shapes, free_unknown_dims

# The rules emit ops in their opset-17 form (ScatterElements with reduction, Split sizes
# and Squeeze axes as inputs, LayerNormalization): older models are converted up to it.
MIN_OPSET = 17

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


def normalise(
    model: onnx.ModelProto,
    input_shapes: InputShapes | None = None,
    keep_inputs: Collection[str] = (),
) -> onnx.ModelProto:
    """A new model: opset raised to MIN_OPSET where it is lower, shapes inferred.

    Before that, the inputs take the `input_shapes` given, every "unknown" dimension
    (-1, 0, "?") is left unset, and an IR-3 model's weights stop being graph inputs (except
    those in `keep_inputs`, e.g. an explained input).

    The converter and shape inference serialise the whole model, weights included; they
    work on a skeleton whose large weights are placeholders of the right type and shape,
    and the weights are put back once (VGG-19: 2.7 s → well under 1 s).
    """
    skeleton, weights = _without_large_weights(model)
    fix_input_shapes(skeleton.graph, input_shapes or {})
    free_unknown_dims(skeleton.graph)
    normalised = _normalise_skeleton(skeleton, keep_inputs)
    for i, init in enumerate(normalised.graph.initializer):
        if init.name in weights:
            normalised.graph.initializer[i].CopyFrom(weights[init.name])
    return normalised


def _weights_as_constants(graph: onnx.GraphProto, keep: Collection[str]) -> None:
    """IR 3 lists every initializer as a graph input too; IR 4 on reads that as "a default
    the caller may override", and runtimes then neither fold nor fuse them. An IR-3
    exporter meant constants: the inputs go, the initializers stay."""
    initializers = {t.name for t in graph.initializer}
    kept = [vi for vi in graph.input if vi.name not in initializers or vi.name in keep]
    del graph.input[:]
    graph.input.extend(kept)


# Initializers at least this many elements are left out of the skeleton; smaller ones
# (shapes, axes, scales that data propagation and the converter read) stay in.
_LARGE = 1024


def _without_large_weights(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    graph = model.graph
    weights: dict[str, onnx.TensorProto] = {}
    initializers = []
    for init in graph.initializer:
        if int(np.prod(init.dims)) >= _LARGE and init.data_type in FLOAT_TYPES:
            weights[init.name] = init
            initializers.append(
                onnx.TensorProto(name=init.name, dims=init.dims, data_type=init.data_type)
            )
        else:
            initializers.append(init)
    skeleton_graph = onnx.GraphProto(
        name=graph.name,
        doc_string=graph.doc_string,
        node=graph.node,
        input=graph.input,
        output=graph.output,
        value_info=graph.value_info,
        initializer=initializers,
        sparse_initializer=graph.sparse_initializer,
        metadata_props=graph.metadata_props,
    )
    skeleton = onnx.ModelProto(
        ir_version=model.ir_version,
        opset_import=model.opset_import,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        metadata_props=model.metadata_props,
        functions=model.functions,
        graph=skeleton_graph,
    )
    return skeleton, weights


def _normalise_skeleton(model: onnx.ModelProto, keep_inputs: Collection[str]) -> onnx.ModelProto:
    opset = ai_onnx_opset(model)
    legacy = model.ir_version < 4
    if opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors
            raise RewriteError(
                f"could not convert the model from opset {opset} to opset {MIN_OPSET}: {exc}"
            ) from None
    # The converter leaves ir_version alone; IR 3 (where every initializer must also be a
    # graph input) cannot hold the new opset nor the backward pass's own initializers.
    model.ir_version = max(
        model.ir_version, helper.find_min_ir_version_for(list(model.opset_import), True)
    )
    if legacy:  # only now: the converter reads an IR-3 model's weights through its inputs
        _weights_as_constants(model.graph, keep_inputs)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise RewriteError(f"shape inference failed on the model: {exc}") from None
    return model


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

    def __init__(
        self, model: onnx.ModelProto, decoded: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """`decoded`: initializers whose values the caller already holds (folded weights)."""
        self.model = model
        self.opset = ai_onnx_opset(model)
        graph = model.graph
        self._infos: dict[str, TensorInfo] = {}
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            self._infos[vi.name] = _info_from_type(vi.type)
        self._constants: dict[str, np.ndarray] = dict(decoded or {})
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

    def info(self, name: str) -> TensorInfo:
        return self._infos.get(name, TensorInfo(0, None))

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None (it is computed)."""
        if not name:
            return None
        if name not in self._constants and name in self._initializers:
            self._constants[name] = numpy_helper.to_array(self._initializers[name])
        return self._constants.get(name)

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
