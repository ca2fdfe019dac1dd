"""The reverse walk: one backward rule per node, from the seeded output back to a tensor.

Every method's gradient is this one walk. Where it stops is the method's choice: the
explained input (vanilla, guided, input × gradient) or a layer inside (Grad-CAM); which
rule a rectifier gets is the rule table's (rules/rectifiers.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .builder import Builder, Node
from .errors import MissingRule, RewriteError
from .model_info import ModelInfo
from .rules import NON_DIFFERENTIABLE, RULES, Grad, Rule
from .rules.quantize import INTEGER_CARRIERS
from .rules.table import node_rule_key


@dataclass(frozen=True)
class Endpoints:
    """The tensor explained (input) and the tensor whose gradient is seeded (output)."""

    input: str
    output: str


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
            forward.update(_carrying_outputs(info, node))
    backward = {ends.output}
    for node in reversed(graph_nodes):
        if any(t in backward for t in node.outputs):
            backward.update(t for t in node.inputs if t)
    live = forward & backward
    if ends.output not in live:
        raise RewriteError(
            f"the output {ends.output!r} does not depend differentiably on the input "
            f"{ends.input!r}{_where_it_stops(info, graph_nodes, forward, backward)}"
        )
    nodes = [
        n
        for n in graph_nodes
        if n.op_type not in NON_DIFFERENTIABLE
        and any(t in live for t in n.inputs)
        and any(t in live for t in n.outputs)
    ]
    return Path(nodes, live)


def _carrying_outputs(info: ModelInfo, node: Node) -> list[str]:
    """The outputs of a node on the input's side that a gradient can reach: float ones, or
    a quantizer's integer ones (rules/quantize.py: straight through)."""
    carriers = INTEGER_CARRIERS.get(node.op_type)
    if carriers is not None and (node.proto is None or node.proto.domain in ("", "ai.onnx")):
        return [node.outputs[i] for i in carriers if i < len(node.outputs) and node.outputs[i]]
    return [t for t in node.outputs if t and info.is_float(t)]


def _where_it_stops(
    info: ModelInfo, nodes: list[Node], forward: set[str], backward: set[str]
) -> str:
    """Names the nodes between input and output whose outputs carry no gradient (integer
    results such as QLinearConv's), the usual reason a quantized model is refused."""
    stops = [
        n
        for n in nodes
        if n.op_type not in NON_DIFFERENTIABLE
        and any(t in forward for t in n.inputs if t)
        and any(t in backward for t in n.outputs if t)
        and not _carrying_outputs(info, n)
    ]
    if not stops:
        return ""
    named = ", ".join(
        f"{n.op_type} {n.name or n.outputs[0]!r} (output {n.outputs[0]!r}: "
        f"{_type_name(info, n.outputs[0])})"
        for n in stops[:5]
    )
    more = f" and {len(stops) - 5} more" if len(stops) > 5 else ""
    return f": the gradient stops at {named}{more}, whose outputs are not float tensors"


def _type_name(info: ModelInfo, name: str) -> str:
    elem = info.info(name).elem_type
    return onnx.TensorProto.DataType.Name(elem).lower() if elem else "unknown type"


def missing_rules(
    path: Path, opset: int, table: dict[str, Rule] | None = None
) -> list[MissingRule]:
    """Every node on the path without a rule; `opset` is the model's own, before conversion."""
    table = RULES if table is None else table
    missing = []
    for node in path.nodes:
        # Looked up by domain and op_type: a custom domain's op has a rule only where one
        # is registered under its qualified name (rules/table.py, rule_key).
        if node_rule_key(node) not in table:
            name = node.name or f"(unnamed, output {node.outputs[0]!r})"
            missing.append(MissingRule(node.op_type, name, opset))
    return missing


def reverse_walk(
    g: Builder, path: Path, ends: Endpoints, table: dict[str, Rule], grad_name: str
) -> str:
    """The gradient of `ends.output` (seeded by the tensor `grad_name`) at `ends.input`.

    Walks `path` (from differentiated_path(ends)) backwards, summing at fan-outs; two walks
    in one builder (Guided Grad-CAM's) share nothing but the forward tensors and the seed.
    """
    pending: dict[str, list[str]] = {ends.output: [grad_name]}

    def total(name: str) -> Grad:
        parts = pending.pop(name, [])
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return g.same_shape(g.Sum(*parts), name)

    for node in reversed(path.nodes):
        dys = [total(t) if t in path.tensors else None for t in node.outputs]
        if all(dy is None for dy in dys):
            continue
        wants = [bool(t) and t in path.tensors for t in node.inputs]
        dxs = table[node_rule_key(node)](g, node, dys, wants)
        for name, want, dx in zip(node.inputs, wants, dxs, strict=False):
            if want and dx is not None:
                pending.setdefault(name, []).append(dx)
                g.same_shape(dx, name)
    gradient = total(ends.input)
    if gradient is None:
        raise RewriteError(f"no gradient reaches {ends.input!r}")
    return gradient
