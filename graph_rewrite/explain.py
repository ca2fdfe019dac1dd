"""The rewrite pass: forward model in, explain model out.

load → find the explained input and output → normalise (input shapes, opset, shapes)
     → fold BatchNorm and per-channel affines into the conv before them
     → list the differentiated path, fail if any op on it has no rule
     → reverse walk, one rule per node, gradients summed at fan-outs
     → same inputs + `output_grad`, same outputs + `saliency`
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import helper

from .builder import Builder, Node
from .errors import MissingRule, RewriteError, UnsupportedOpsError
from .fold import fold_affines
from .methods import METHODS, Method, Rectifiers, rules_for
from .model_info import FLOAT_TYPES, ModelInfo, ai_onnx_opset, normalise
from .rules import NON_DIFFERENTIABLE, RULES, Grad, Rule
from .shapes import InputShapes
from .targets import Target, check_target

GRAD_INPUT = "output_grad"
SALIENCY_OUTPUT = "saliency"

# Ops that only move or relabel values: a Softmax behind them is still "the" Softmax.
_SHAPE_ONLY = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Dropout", "Cast"}
)


@dataclass(frozen=True)
class Endpoints:
    """The tensor explained (input) and the tensor whose gradient is seeded (output)."""

    input: str
    output: str


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
class Path:
    """The nodes through which a gradient flows from the output back to the input."""

    nodes: list[Node]
    tensors: set[str]  # tensors both reached from the input and reaching the output


def differentiated_path(info: ModelInfo, ends: Endpoints) -> Path:
    graph_nodes = [Node.from_proto(n) for n in info.model.graph.node]
    forward = {ends.input}
    for node in graph_nodes:
        if node.op_type in NON_DIFFERENTIABLE:
            continue
        if any(t in forward for t in node.inputs if t):
            forward.update(t for t in node.outputs if t and info.is_float(t))
    backward = {ends.output}
    for node in reversed(graph_nodes):
        if any(t in backward for t in node.outputs):
            backward.update(t for t in node.inputs if t)
    live = forward & backward
    if ends.output not in live:
        raise RewriteError(
            f"the output {ends.output!r} does not depend differentiably on the input {ends.input!r}"
        )
    nodes = [
        n
        for n in graph_nodes
        if n.op_type not in NON_DIFFERENTIABLE
        and any(t in live for t in n.inputs)
        and any(t in live for t in n.outputs)
    ]
    return Path(nodes, live)


def missing_rules(
    path: Path, opset: int, table: dict[str, Rule] | None = None
) -> list[MissingRule]:
    """Every node on the path without a rule; `opset` is the model's own, before conversion."""
    table = RULES if table is None else table
    missing = []
    for node in path.nodes:
        domain = node.proto.domain if node.proto is not None else ""
        if domain not in ("", "ai.onnx") or node.op_type not in table:
            name = node.name or f"(unnamed, output {node.outputs[0]!r})"
            missing.append(MissingRule(node.op_type, name, opset))
    return missing


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
) -> _Prepared:
    opset = ai_onnx_opset(model)
    # Endpoints come from the model as exported: the opset converter may wrap an old
    # Softmax in Flatten/Reshape, and the logits should keep the exporter's name and shape.
    ends = resolve_endpoints(model, input_name, output_name)
    normalised = normalise(model, input_shapes, keep_inputs={ends.input})
    # BatchNorm and per-channel affines after a conv go into its weights: the forward part
    # is then what a runtime would run anyway, and their backward costs nothing.
    folded = fold_affines(normalised, keep={ends.input, ends.output})
    info = ModelInfo(normalised, decoded=folded)
    return _Prepared(info, ends, differentiated_path(info, ends), opset)


def _differentiate(
    prepared: _Prepared,
    method: Method,
    rectifiers: Rectifiers,
    grad_name: str,
    saliency_name: str,
    target: Target,
) -> tuple[Builder, str]:
    """The backward pass's nodes (in a builder) and the saliency's name; the model unchanged."""
    table = rules_for(method, rectifiers)
    info, ends, path = prepared.info, prepared.ends, prepared.path
    model = info.model
    existing = {vi.name for vi in (*model.graph.input, *model.graph.output)}
    existing |= {t for node in model.graph.node for t in (*node.input, *node.output)}
    for new in (grad_name, saliency_name):
        if new in existing:
            raise RewriteError(
                f"the model already has a tensor named {new!r}; choose another name for the "
                f"explain model's {'gradient input' if new == grad_name else 'saliency output'}"
            )
    missing = missing_rules(path, prepared.opset, table)
    if missing:
        raise UnsupportedOpsError(missing)
    g = Builder(info, target)
    return g, _reverse_walk(g, path, ends, table, grad_name)


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
) -> Endpoints:
    """The explained endpoints, once every step of `build_explain_model` has run for each
    of `methods` (all but writing the result); raises the RewriteError convert would."""
    for method in methods:
        rules_for(method, rectifiers)
    target = check_target(target)
    prepared = _prepare(model, input_name, output_name, input_shapes)
    for i, method in enumerate(methods):
        try:
            _differentiate(prepared, method, rectifiers, grad_name, saliency_name, target)
        except UnsupportedOpsError:
            raise
        except RewriteError as exc:
            if i == 0:
                raise
            # The earlier methods passed: the failure is this method's own, so say which.
            raise RewriteError(f"method {method!r}: {exc}") from None
    return prepared.ends


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
) -> onnx.ModelProto:
    """The explain model: `model` plus an input `grad_name` and an output `saliency_name`.

    `target` "portable" gives the same saliency on every conforming runtime; a runtime's
    name allows formulations that are faster on that runtime alone (see targets.py).
    `input_shapes` fixes the named inputs' shapes first (e.g. {"x": [1, 3, 640, 640]}).
    """
    rules_for(method, rectifiers)
    target = check_target(target)
    prepared = _prepare(model, input_name, output_name, input_shapes)
    g, saliency = _differentiate(prepared, method, rectifiers, grad_name, saliency_name, target)

    info, ends = prepared.info, prepared.ends
    graph = info.model.graph
    out_info = info.info(ends.output)
    in_info = info.info(ends.input)
    graph.input.append(_value_info(grad_name, out_info.elem_type, out_info.shape))
    graph.node.extend(g.nodes)
    graph.node.append(helper.make_node("Identity", [saliency], [saliency_name], name=saliency_name))
    g.write_initializers(graph)
    graph.output.append(_value_info(saliency_name, in_info.elem_type, in_info.shape))
    return info.model


def _reverse_walk(
    g: Builder, path: Path, ends: Endpoints, table: dict[str, Rule], grad_name: str
) -> str:
    pending: dict[str, list[str]] = {ends.output: [grad_name]}

    def total(name: str) -> Grad:
        parts = pending.pop(name, [])
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return g.Sum(*parts)

    for node in reversed(path.nodes):
        dys = [total(t) if t in path.tensors else None for t in node.outputs]
        if all(dy is None for dy in dys):
            continue
        wants = [bool(t) and t in path.tensors for t in node.inputs]
        dxs = table[node.op_type](g, node, dys, wants)
        for name, want, dx in zip(node.inputs, wants, dxs, strict=False):
            if want and dx is not None:
                pending.setdefault(name, []).append(dx)
    saliency = total(ends.input)
    if saliency is None:
        raise RewriteError(f"no gradient reaches the input {ends.input!r}")
    return saliency


def _value_info(
    name: str, elem_type: int, shape: Sequence[int | str | None] | None
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        name, elem_type or onnx.TensorProto.FLOAT, None if shape is None else list(shape)
    )
