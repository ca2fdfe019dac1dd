"""The rewrite pass: forward model in, explain model out.

load → find the explained input and output → normalise (input shapes, opset, shapes)
     → fold BatchNorm and per-channel affines into the conv before them
     → list the differentiated path, fail if any op on it has no rule
     → reverse walk, one rule per node, gradients summed at fan-outs
     → same inputs + `output_grad`, same outputs + `saliency`
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import helper

from .builder import Builder
from .errors import RewriteError, UnsupportedOpsError
from .fold import fold_affines
from .layers import last_spatial_layer
from .methods import METHODS, Method, MethodSpec, method_spec
from .methods.base import Context
from .model_info import FLOAT_TYPES, ModelInfo, ai_onnx_opset, normalise
from .rules.rectifiers import Rectifiers, rectifier_ops
from .shapes import InputShapes
from .targets import Target, check_target
from .walk import Endpoints, Path, differentiated_path

__all__ = ["Endpoints", "Path", "differentiated_path"]  # re-exported: walk.py holds them

GRAD_INPUT = "output_grad"
SALIENCY_OUTPUT = "saliency"

# Ops that only move or relabel values: a Softmax behind them is still "the" Softmax.
_SHAPE_ONLY = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Dropout", "Cast"}
)


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
    names = {t for node in model.graph.node for t in (*node.input, *node.output)}
    names |= {vi.name for vi in model.graph.input}
    for label, given in (("input", input_name), ("output", output_name)):
        if given is not None and given not in names:
            raise RewriteError(f"the model has no tensor named {given!r} (given as --{label})")
    return Endpoints(input_name or default_input(model), output_name or default_output(model))


@dataclass
class _Prepared:
    """A normalised model with its endpoints and differentiated path, before any change."""

    info: ModelInfo
    ends: Endpoints
    path: Path
    opset: int  # the model's own, as exported


def _prepare(
    model: onnx.ModelProto,
    input_name: str | None,
    output_name: str | None,
    input_shapes: InputShapes | None,
    params: Mapping[str, Any] | None = None,
) -> _Prepared:
    opset = ai_onnx_opset(model)
    # Endpoints come from the model as exported: the opset converter may wrap an old
    # Softmax in Flatten/Reshape, and the logits should keep the exporter's name and shape.
    ends = resolve_endpoints(model, input_name, output_name)
    params = params or {}
    normalised = normalise(model, input_shapes, keep_inputs={ends.input})
    # BatchNorm and per-channel affines after a conv go into its weights: the forward part
    # is then what a runtime would run anyway, and their backward costs nothing. A layer
    # the user names must stay, so the fold may not merge it away.
    keep = {ends.input, ends.output}
    if params.get("layer"):
        layer = str(params["layer"])
        if layer not in {t for node in normalised.graph.node for t in node.output}:
            raise RewriteError(f"the model has no tensor named {layer!r} (given as the layer)")
        keep.add(layer)
    folded = fold_affines(normalised, keep=keep)
    info = ModelInfo(normalised, decoded=folded)
    return _Prepared(info, ends, differentiated_path(info, ends), opset)


def _checked_names(info: ModelInfo, grad_name: str, saliency_name: str) -> None:
    model = info.model
    existing = {vi.name for vi in (*model.graph.input, *model.graph.output)}
    existing |= {t for node in model.graph.node for t in (*node.input, *node.output)}
    for new in (grad_name, saliency_name):
        if new in existing:
            raise RewriteError(
                f"the model already has a tensor named {new!r}; choose another name for the "
                f"explain model's {'gradient input' if new == grad_name else 'saliency output'}"
            )


def _differentiate(
    prepared: _Prepared,
    spec: MethodSpec,
    params: Mapping[str, Any],
    rectifiers: Rectifiers,
    grad_name: str,
    saliency_name: str,
    target: Target,
) -> tuple[Builder, str]:
    """The backward pass's nodes (in a builder) and the saliency's name; the model unchanged."""
    info, ends, path = prepared.info, prepared.ends, prepared.path
    _checked_names(info, grad_name, saliency_name)
    g = Builder(info, target)
    ctx = Context(
        g=g,
        ends=ends,
        input_path=path,
        rectifiers=rectifiers,
        params=params,
        grad_name=grad_name,
        opset=prepared.opset,
        default_layer=lambda: last_spatial_layer(info, path),
    )
    return g, spec.build(ctx)


def _spec_and_params(
    method: Method, rectifiers: Rectifiers, params: Mapping[str, Any] | None
) -> tuple[MethodSpec, dict[str, Any]]:
    spec = method_spec(method)
    rectifier_ops(rectifiers)  # a ValueError for an unknown choice, before any work
    return spec, spec.resolve(params)


def default_layer(
    model: onnx.ModelProto,
    input_name: str | None = None,
    output_name: str | None = None,
    input_shapes: InputShapes | None = None,
) -> str | None:
    """Grad-CAM's default layer (layers.py), or None when the model has none (a detector)."""
    prepared = _prepare(model, input_name, output_name, input_shapes)
    return last_spatial_layer(prepared.info, prepared.path)


def check(
    model: onnx.ModelProto,
    input_name: str | None = None,
    output_name: str | None = None,
    methods: Sequence[Method] = METHODS,
    rectifiers: Rectifiers = "all",
    grad_name: str = GRAD_INPUT,
    saliency_name: str = SALIENCY_OUTPUT,
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Endpoints:
    """The explained endpoints, once every step of `build_explain_model` has run for each
    of `methods` (all but writing the result); raises the RewriteError convert would.
    `params` maps a method's name to its parameters."""
    params = params or {}
    resolved = [_spec_and_params(m, rectifiers, params.get(m)) for m in methods]
    target = check_target(target)
    shared = _prepare(model, input_name, output_name, input_shapes)
    for i, (spec, method_params) in enumerate(resolved):
        try:
            if spec.whole_model is not None:
                _batch_names(grad_name, saliency_name)
                spec.whole_model(
                    model,
                    method_params,
                    input_name=input_name,
                    output_name=output_name,
                    rectifiers=rectifiers,
                    target=target,
                    input_shapes=input_shapes,
                )
                continue
            prepared = shared
            if method_params.get("layer"):
                prepared = _prepare(model, input_name, output_name, input_shapes, method_params)
            _differentiate(
                prepared, spec, method_params, rectifiers, grad_name, saliency_name, target
            )
        except UnsupportedOpsError:
            raise
        except RewriteError as exc:
            if i == 0:
                raise
            # The earlier methods passed: the failure is this method's own, so say which.
            raise RewriteError(f"method {spec.name!r}: {exc}") from None
    return shared.ends


def build_explain_model(
    model: onnx.ModelProto,
    method: Method = "guided",
    input_name: str | None = None,
    output_name: str | None = None,
    rectifiers: Rectifiers = "all",
    grad_name: str = GRAD_INPUT,
    saliency_name: str = SALIENCY_OUTPUT,
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
    params: Mapping[str, Any] | None = None,
) -> onnx.ModelProto:
    """The explain model: `model` plus an input `grad_name` and an output `saliency_name`.

    `method` is a registered method's name (methods/); `params` its parameters (e.g.
    {"layer": "relu_9", "style": "pytorch-grad-cam"} for gradcam), defaults for the rest.
    `target` "portable" gives the same saliency on every conforming runtime; a runtime's
    name allows formulations that are faster on that runtime alone (see targets.py).
    `input_shapes` fixes the named inputs' shapes first (e.g. {"x": [1, 3, 640, 640]}).
    """
    spec, method_params = _spec_and_params(method, rectifiers, params)
    target = check_target(target)
    if spec.whole_model is not None:
        _batch_names(grad_name, saliency_name)
        return spec.whole_model(
            model,
            method_params,
            input_name=input_name,
            output_name=output_name,
            rectifiers=rectifiers,
            target=target,
            input_shapes=input_shapes,
        )
    prepared = _prepare(model, input_name, output_name, input_shapes, method_params)
    g, saliency = _differentiate(
        prepared, spec, method_params, rectifiers, grad_name, saliency_name, target
    )

    info, ends = prepared.info, prepared.ends
    graph = info.model.graph
    out_info = info.info(ends.output)
    in_info = info.info(ends.input)
    graph.input.append(_value_info(grad_name, out_info.elem_type, out_info.shape))
    graph.node.extend(g.nodes)
    graph.node.append(helper.make_node("Identity", [saliency], [saliency_name], name=saliency_name))
    g.write_initializers(graph)
    shape = spec.saliency_shape(in_info.shape)
    graph.output.append(_value_info(saliency_name, in_info.elem_type, shape))
    return info.model


def _batch_names(grad_name: str, saliency_name: str) -> None:
    if (grad_name, saliency_name) != (GRAD_INPUT, SALIENCY_OUTPUT):
        raise RewriteError(
            f"the batch methods name their seed {GRAD_INPUT!r} and their map "
            f"{SALIENCY_OUTPUT!r}; other names are not supported"
        )


def _value_info(
    name: str, elem_type: int, shape: Sequence[int | str | None] | None
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        name, elem_type or onnx.TensorProto.FLOAT, None if shape is None else list(shape)
    )
