"""The prepare pass: the model as exported → the form every later pass reads.

    endpoints   the explained input and output, found in the model as exported
    shapes      the inputs' shapes fixed where given, unknown dimensions left free
    opset       raised to MIN_OPSET where lower, so rules read one form of each op (axes,
                pads and clip bounds as inputs, not attributes, except where even the
                newest opset keeps an attribute)
    inference   every tensor's type and shape inferred where they can be (onnx's own
                inference, and the outputs of the contrib ops that have a rule, which
                onnx has no schema for)

The endpoints are resolved before the rest (`resolve_endpoints`): the opset converter may
wrap an old Softmax in Flatten/Reshape, and the logits should keep the exporter's name.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, shape_inference, version_converter

from .errors import RewriteError
from .model_info import FLOAT_TYPES, ai_onnx_opset
from .shapes import InputShapes, fix_input_shapes, free_unknown_dims
from .walk import Endpoints

# The rules emit ops in their opset-17 form (ScatterElements with reduction, Split sizes
# and Squeeze axes as inputs, LayerNormalization): older models are converted up to it.
MIN_OPSET = 17

# Ops that only move or relabel values: a Softmax behind them is still "the" Softmax.
_SHAPE_ONLY = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Dropout", "Cast"}
)


def prepare(
    model: onnx.ModelProto, ends: Endpoints, input_shapes: InputShapes | None = None
) -> onnx.ModelProto:
    """A new model, ready for the later passes (`model` is left as it is): `input_shapes`
    fixed, opset raised, shapes inferred; `ends.input` stays a graph input."""
    return normalise(model, input_shapes, keep_inputs={ends.input})


def default_input(model: onnx.ModelProto) -> str:
    """The first float graph input that is not an initializer (old IRs list weights too)."""
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if vi.type.tensor_type.elem_type in FLOAT_TYPES:
            return vi.name
    raise RewriteError("the model has no float input that is not an initializer")


def default_output(model: onnx.ModelProto) -> str:
    """The first output, or the logits when that output is a Softmax/LogSoftmax of them."""
    if not model.graph.output:
        raise RewriteError("the model has no outputs")
    producer = {out: node for node in model.graph.node for out in node.output}
    name = model.graph.output[0].name
    current = name
    while current in producer:
        node = producer[current]
        if node.op_type in ("Softmax", "LogSoftmax"):
            return node.input[0]
        if node.op_type not in _SHAPE_ONLY:
            break
        current = node.input[0]
    return name


def resolve_endpoints(
    model: onnx.ModelProto, input_name: str | None = None, output_name: str | None = None
) -> Endpoints:
    """The endpoints given, checked to exist, or the defaults (the first float input; the
    first output or the logits before its Softmax)."""
    names = {t for node in model.graph.node for t in (*node.input, *node.output)}
    names |= {vi.name for vi in model.graph.input}
    for label, given in (("input", input_name), ("output", output_name)):
        if given is not None and given not in names:
            raise RewriteError(f"the model has no tensor named {given!r} (given as --{label})")
    return Endpoints(input_name or default_input(model), output_name or default_output(model))


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
        if _declare_contrib_outputs(model.graph):  # and from them, what follows them
            model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise RewriteError(f"shape inference failed on the model: {exc}") from None
    return model


def _declare_contrib_outputs(graph: onnx.GraphProto) -> bool:
    """Types and shapes for the outputs of com.microsoft DynamicQuantizeLSTM nodes that have
    none; whether any was added.

    onnx has no schema for onnxruntime's contrib ops, so its inference stops at them. A
    model from quantize_dynamic keeps the float LSTM's inferred outputs, but one without
    them would leave the backward Scans' per-step shapes unknown, which onnxruntime's Scan
    refuses at run time. The outputs are LSTM's: Y [T, D, B, H], Y_h and Y_c [D, B, H].
    """
    types = {vi.name: vi.type for vi in [*graph.input, *graph.value_info, *graph.output]}
    declared = {vi.name: vi for vi in [*graph.value_info, *graph.output]}
    added = False
    for node in graph.node:
        if node.domain != "com.microsoft" or node.op_type != "DynamicQuantizeLSTM":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x_type = types.get(node.input[0]) if node.input else None
        if x_type is None or len(x_type.tensor_type.shape.dim) != 3 or "hidden_size" not in attrs:
            continue  # the rule refuses a node without hidden_size
        t, b, _ = x_type.tensor_type.shape.dim
        d = 2 if attrs.get("direction") == b"bidirectional" else 1
        hidden = onnx.TensorShapeProto.Dimension(dim_value=int(attrs["hidden_size"]))
        dirs = onnx.TensorShapeProto.Dimension(dim_value=d)
        shapes = [[t, dirs, b, hidden], [dirs, b, hidden], [dirs, b, hidden]]
        for name, dims in zip(node.output, shapes, strict=False):
            have = declared.get(name)
            if not name or (have is not None and have.type.tensor_type.HasField("shape")):
                continue
            if have is None:
                have = graph.value_info.add(name=name)
            have.type.tensor_type.elem_type = x_type.tensor_type.elem_type
            have.type.tensor_type.shape.dim.extend(dims)
            added = True
    return added
