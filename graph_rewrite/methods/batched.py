"""Methods that average a gradient over a batch made from each sample: SmoothGrad (noisy
copies) and Integrated Gradients (points on a path from a baseline).

The explain model keeps the caller's batch: `x` [N, ...] and `output_grad` [N, ...] in, the
model's own outputs (of `x` itself) and `saliency` [N, ...] out, so a seed computed inside
the graph from the explained output still has the caller's shape. Inside:

    prelude    x → xb [S·N, ...], sample-major (row s·N + n is copy s of sample n)
    copy       the forward nodes from x to the explained output, renamed, run on xb
               (they share every weight with the original nodes)
    backward   the base method's reverse walk through that copy only, seeded with
               output_grad repeated S times
    epilogue   the S gradients of each sample → one map (and extra outputs)

The original nodes still compute the model's outputs on x: one forward pass more than
the batch needs, so that every output keeps its meaning and shape whatever its layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, shape_inference

from ..backward import GRAD_INPUT, SALIENCY_OUTPUT, BackwardOptions, backward
from ..builder import Builder
from ..errors import RewriteError
from ..fold import fold
from ..model_info import ModelInfo, ai_onnx_opset
from ..prepare import prepare, resolve_endpoints
from ..rules.rectifiers import DEFAULT_RECTIFIERS, Rectifiers, rectifier_ops
from ..shapes import InputShapes
from ..targets import Target, check_target
from . import deconvnet, guided, vanilla
from .base import MethodSpec

# The gradient methods a batch method can average or integrate, by name.
GRADIENT_METHODS: dict[str, MethodSpec] = {
    m.METHOD.name: m.METHOD for m in (vanilla, deconvnet, guided)
}

# The backward pass's own seed and map, at the batch's size, before prelude and epilogue.
_BATCH_GRAD = "onnxplain_batch/output_grad"
_BATCH_SALIENCY = "onnxplain_batch/saliency"
_BATCH_DIM = "batch"
_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


@dataclass
class Batch:
    """What a prelude builds: the batch, and the number S of copies of each sample in it."""

    x: str  # [S·N, ...]
    copies: str  # int64 [1], holding S
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)  # inputs it adds


@dataclass
class Context:
    """What an epilogue may read: the endpoints on x, the seed, and a way to rerun the
    forward part on another tensor shaped like x."""

    x: str
    y: str  # the explained output of x itself
    seed: str  # output_grad, [N, ...]
    grads: str  # the batch's gradients, [S, N, ...]
    forward: Callable[[str], str]  # a tensor like x → its explained output (a forward copy)


Prelude = Callable[[Builder, str], Batch]
# Returns the outputs to add, by name: the first is the saliency.
Epilogue = Callable[[Builder, Context], dict[str, str]]


def build_batched_model(
    model: onnx.ModelProto,
    method: str,
    label: str,
    prelude: Prelude,
    epilogue: Epilogue,
    input_name: str | None = None,
    output_name: str | None = None,
    rectifiers: Rectifiers = DEFAULT_RECTIFIERS,
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
) -> onnx.ModelProto:
    """The explain model of a batch method over gradient `method` (`label` names it in
    errors)."""
    spec = _gradient_method(method, label)
    rectifier_ops(rectifiers)  # a ValueError for an unknown choice, before any work
    target = check_target(target)
    ends = resolve_endpoints(model, input_name, output_name)
    x, y = ends.input, ends.output
    for taken in (GRAD_INPUT, SALIENCY_OUTPUT):
        if _has_tensor(model, taken):
            raise RewriteError(f"the model already has a tensor named {taken!r}")
    base = _with_free_batch(prepare(model, ends, input_shapes), x, y, label)
    # Folded once here, so that the copy shares the folded weights instead of folding its own.
    info = ModelInfo(fold(base, keep={x, y}))
    g = Builder(info, target, prefix="onnxplain_batch")

    batch = prelude(g, x)
    copier = _ForwardCopier(base, g, x, y)
    yb = copier.copy(batch.x)
    graph = base.graph
    graph.input.extend(batch.inputs)
    graph.node.extend(g.nodes)
    del g.nodes[:]
    g.write_initializers(graph)
    del g.initializers[:]

    # The base method's backward pass through the copy: prepared again, so that shape
    # inference reaches the copy's tensors, and folded (the copy's own affines, if any).
    copy_ends = resolve_endpoints(base, batch.x, yb)
    options = BackwardOptions(
        copy_ends,
        spec.resolve(None),
        rectifiers,
        _BATCH_GRAD,
        _BATCH_SALIENCY,
        target,
        source_opset=ai_onnx_opset(base),
    )
    prepared = fold(prepare(base, copy_ends), keep={copy_ends.input, copy_ends.output})
    explain = backward(prepared, spec, options)
    graph = explain.graph
    y_info = info.info(y)
    # The seed: the caller's output_grad, each sample's row repeated for its S copies.
    _drop(graph.input, _BATCH_GRAD)
    graph.input.append(
        helper.make_tensor_value_info(
            GRAD_INPUT, y_info.elem_type or onnx.TensorProto.FLOAT, _dims(y_info.shape)
        )
    )
    rest = g.Slice(g.Shape(GRAD_INPUT), g.ints([1]), g.ints([np.iinfo(np.int64).max]))
    ones = g.Slice(g.ints([1] * 9), g.ints([0]), g.Shape(g.Shape(GRAD_INPUT)))
    repeated = g.Expand(g.Unsqueeze(GRAD_INPUT, g.ints([0])), g.Concat(batch.copies, ones, axis=0))
    g.Reshape(repeated, g.Concat(g.ints([-1]), rest, axis=0))
    g.nodes[-1].output[0] = _BATCH_GRAD

    _drop(graph.output, _BATCH_SALIENCY)
    grads = g.Reshape(_BATCH_SALIENCY, g.Concat(batch.copies, g.Shape(x), axis=0))
    context = Context(x, y, GRAD_INPUT, grads, copier.copy)
    outputs = epilogue(g, context)
    for i, (name, tensor) in enumerate(outputs.items()):
        g.nodes.append(helper.make_node("Identity", [tensor], [name], name=name))
        shape = info.info(x).shape if i == 0 else (y_info.shape or (None,))[:1]
        graph.output.append(
            helper.make_tensor_value_info(name, info.info(x).elem_type, _dims(shape))
        )
    graph.node.extend(g.nodes)
    g.write_initializers(graph)
    _sort_topologically(graph)
    return explain


def _gradient_method(name: str, label: str) -> MethodSpec:
    try:
        return GRADIENT_METHODS[name]
    except KeyError:
        raise RewriteError(
            f"{label} averages or integrates one of {', '.join(GRADIENT_METHODS)}, not {name!r}"
        ) from None


def _has_tensor(model: onnx.ModelProto, name: str) -> bool:
    graph = model.graph
    names = {vi.name for vi in (*graph.input, *graph.output)}
    names |= {t for n in graph.node for t in (*n.input, *n.output)}
    return name in names


def _dims(shape: Sequence[int | str | None] | None) -> list[int | str | None] | None:
    return None if shape is None else list(shape)


def _drop(values: Sequence[onnx.ValueInfoProto], name: str) -> None:
    for i, vi in enumerate(values):
        if vi.name == name:
            del values[i]  # type: ignore[attr-defined]
            return


def _with_free_batch(model: onnx.ModelProto, x: str, y: str, label: str) -> onnx.ModelProto:
    """The model with `x`'s batch dimension free, or a RewriteError saying why it cannot be.

    A batch method runs S·N samples through the forward part: a model exported for a fixed
    batch is freed when nothing else in it depends on that size (shape inference then
    carries the free batch to the explained output); a graph that bakes the size in (a
    Reshape to a constant shape) would fail or mix samples, and is refused here.
    """
    graph = model.graph
    x_vi = next((vi for vi in graph.input if vi.name == x), None)
    if x_vi is None:
        raise RewriteError(f"{label} explains a graph input; {x!r} is not one")
    dims = x_vi.type.tensor_type.shape.dim
    if not dims:
        raise RewriteError(f"{label} needs the rank of input {x!r}; the model does not give it")
    fixed = dims[0].dim_value if dims[0].HasField("dim_value") else None
    if fixed is not None or not dims[0].dim_param:
        dims[0].Clear()
        dims[0].dim_param = _BATCH_DIM
        # Shapes inferred for the fixed batch would clash with the free one.
        del graph.value_info[:]
        for vi in graph.output:
            if vi.type.tensor_type.HasField("shape") and vi.type.tensor_type.shape.dim:
                vi.type.tensor_type.shape.dim[0].Clear()
        try:
            model = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except Exception as exc:
            raise RewriteError(
                f"{label} runs a batch of noisy or interpolated copies, so it needs a free "
                f"batch dimension; freeing {x!r}'s (fixed at {fixed}) breaks shape "
                f"inference: {exc}. Re-export the model with a dynamic batch axis."
            ) from None
    y_info = ModelInfo(model).info(y)
    y_batch = y_info.shape[0] if y_info.shape else None
    if isinstance(y_batch, int):
        raise RewriteError(
            f"{label} runs a batch of noisy or interpolated copies, so it needs a free batch "
            f"dimension; the explained output {y!r} keeps a batch of {y_batch} when the "
            f"batch of {x!r} is free (a Reshape or Expand to a constant shape bakes the "
            "batch size in). Re-export the model with a dynamic batch axis."
        )
    return model


class _ForwardCopier:
    """Copies of the forward nodes from x to y, renamed, run on another tensor like x."""

    def __init__(self, base: onnx.ModelProto, g: Builder, x: str, y: str) -> None:
        self.g = g
        self.x = x
        self.y = y
        # Read now, before the prelude and the backward pass join the graph.
        self.nodes = self._nodes(base.graph.node)

    def _nodes(self, graph_nodes: Sequence[onnx.NodeProto]) -> list[onnx.NodeProto]:
        nodes = list(graph_nodes)
        reached = {self.x}
        for node in nodes:
            if any(t in reached for t in node.input if t):
                reached.update(t for t in node.output if t)
        needed = {self.y}
        for node in reversed(nodes):
            if any(t in needed for t in node.output):
                needed.update(t for t in node.input if t)
        return [
            n
            for n in nodes
            if any(t in reached for t in n.input if t) and any(t in needed for t in n.output)
        ]

    def copy(self, source: str) -> str:
        """Appends a copy of the forward part to the builder, fed `source`; returns its y."""
        renamed = {self.x: source}
        for node in self.nodes:
            if any(a.type in _SUBGRAPHS for a in node.attribute):
                raise RewriteError(
                    f"{node.op_type} {node.name!r} holds a subgraph; batch methods cannot "
                    "copy it onto the batch"
                )
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = self.g.fresh(f"{node.name or node.op_type}_copy")
            for i, t in enumerate(copy.input):
                copy.input[i] = renamed.get(t, t)
            for i, t in enumerate(copy.output):
                if t:
                    renamed[t] = self.g.fresh(t.rsplit("/", 1)[-1])
                    copy.output[i] = renamed[t]
            self.g.nodes.append(copy)
        return renamed[self.y]


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Nodes in an order where each comes after its inputs' producers (ONNX requires it)."""
    available = {t.name for t in graph.initializer} | {vi.name for vi in graph.input} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(t in available for t in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise RewriteError(
                f"internal error: node {rest[0].name!r} reads a tensor nothing produces"
            )
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


# ------------------------------------------------------------------ helpers for preludes


def reduce(g: Builder, op: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
    """A Reduce* over `axes`: axes as an input from the opset that takes them so."""
    as_input = g.info.opset >= (13 if op == "ReduceSum" else 18)
    if as_input:
        return g.op(op, x, g.ints(list(axes)), keepdims=keepdims)
    return g.op(op, x, axes=list(axes), keepdims=keepdims)


def per_sample_shape(g: Builder, x: str) -> str:
    """int64 [rank-1]: x's shape without its batch dimension."""
    static = g.tensor(x).static_from(1)
    if static is not None:
        return g.ints(list(static))
    return g.Slice(g.Shape(x), g.ints([1]), g.ints([np.iinfo(np.int64).max]))


def flatten_copies(g: Builder, stacked: str, x: str) -> str:
    """[S, N, ...] → [S·N, ...]."""
    return g.Reshape(stacked, g.Concat(g.ints([-1]), per_sample_shape(g, x), axis=0))


def per_sample(g: Builder, x: str, values: str) -> str:
    """[N] or [N, 1] values reshaped to broadcast against x: [N, 1, ..., 1]."""
    rank = g.tensor(x).rank
    if rank is None:
        raise RewriteError(f"the rank of {x!r} is unknown")
    return g.Reshape(values, g.ints([-1] + [1] * (rank - 1)))


def along_copies(g: Builder, values: np.ndarray, x: str) -> str:
    """A constant [S] as [S, 1, ..., 1], to broadcast against [S, N, ...] (rank of x + 1)."""
    rank = g.tensor(x).rank
    if rank is None:
        raise RewriteError(f"the rank of {x!r} is unknown")
    return g.const(values.astype(g.dtype_of(x)).reshape(-1, *([1] * rank)), hint="per_copy")


def seeded_score(g: Builder, seed: str, scores: str) -> str:
    """Σ seed·scores over each sample's entries: [N]."""
    return reduce(g, "ReduceSum", g.Flatten(g.Mul(seed, scores), axis=1), [1], keepdims=0)
