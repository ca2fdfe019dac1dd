"""The backward pass's scalar constants, given the rank of the tensor they broadcast against.

onnxruntime CPU is slow to broadcast a rank-0 (or 1-D) size-1 constant against an
[N, C, 1, 1] tensor, and not the same constant shaped [1, 1, 1, 1]: a Mul, Add or Less of a
[1, 960, 1, 1] tensor and a scalar took 8.6 µs, with the scalar as [1, 1, 1, 1] 0.4 µs (a
chain of 200 such nodes, 2 threads; the two cost the same on [1, 72, 28, 28] and on
[1, 1000]). Squeeze-excitation gates and classifier heads have such tensors:
MobileNetV3-Large's guided explain model has 40 of those nodes (its hard-sigmoid gates'
slopes), and with the scalars rank-matched it takes 0.975 of its time (paired, 40 rounds,
threads not spinning, as the server runs them; 0.96 spinning), the map bit for bit the same.
The result has the same shape either way (broadcasting pads the shorter shape with ones on
the left), so the rewrite is exact on every runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .builder import Builder

# Ops whose inputs broadcast against each other (numpy rules): the ones a scalar joins.
_BROADCASTING = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Where", "PRelu",
    "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal", "And", "Or",
}  # fmt: skip
# Ops whose output has the rank of their inputs (of the first, or of all alike).
_RANK_KEEPING = _BROADCASTING | {
    "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Sigmoid", "Tanh", "Erf", "Sign",
    "Relu", "LeakyRelu", "HardSigmoid", "Elu", "Softplus", "Not", "Cast", "Identity", "Clip",
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Resize", "DepthToSpace", "SpaceToDepth", "Pad", "Slice",
    "BatchNormalization", "Softmax", "ScatterElements", "GatherElements",
}  # fmt: skip


def match_scalar_ranks(g: Builder) -> int:
    """Replaces, in `g`'s nodes, each size-1 constant made by `g` that broadcasts against a
    tensor of higher known rank by the same value at that rank; returns how many inputs
    changed. Constants left unused are dropped."""
    scalars = {
        init.name: numpy_helper.to_array(init)
        for init in g.initializers
        if int(np.prod(init.dims)) == 1
    }
    # Ranks of what g made: its constants (weights, shapes, scalars), then each node's
    # outputs in turn (g's nodes come in the order they were made, inputs first).
    ranks = {init.name: len(init.dims) for init in g.initializers}
    ranks.update((name, len(stored.dims)) for name, stored in g.copies)

    def rank(name: str) -> int | None:
        if name in ranks:
            return ranks[name]
        forward = g.shaped_like.get(name, name)
        return g.tensor(forward).rank

    changed = 0
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _RANK_KEEPING:
            continue
        given = [rank(t) for t in node.input if t]  # "" is an omitted optional input
        known = [r for r in given if r is not None]
        if not known or len(known) < len(given):
            continue  # an input of unknown rank: the output's rank is unknown too
        top = max(known)
        if node.op_type in _BROADCASTING:
            for i, name in enumerate(node.input):
                value = scalars.get(name)
                if value is not None and value.ndim < top:
                    node.input[i] = g.const(value.reshape((1,) * top), hint="scalar")
                    changed += 1
        for out in node.output:
            ranks[out] = top if node.op_type in _BROADCASTING else known[0]
    if changed:
        _drop_unused(g, set(scalars))
    return changed


def _drop_unused(g: Builder, candidates: set[str]) -> None:
    used = _names_used(g.nodes)
    unused = candidates - used
    g.initializers[:] = [t for t in g.initializers if t.name not in unused]
    g.forget_constants(unused)


def _names_used(nodes: list[onnx.NodeProto]) -> set[str]:
    """Every tensor name the nodes read, their subgraphs' (Loop and Scan bodies) included."""
    used: set[str] = set()
    for node in nodes:
        used.update(node.input)
        for attr in node.attribute:
            graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for graph in graphs:
                used |= _names_used(list(graph.node))
    return used
