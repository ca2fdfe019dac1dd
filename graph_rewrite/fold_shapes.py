"""Shape arithmetic folded to constants, the batch dimension left free (part of the fold pass).

Exporters write sizes computed from the input's shape into the graph: Swin's `maybe_pad`
and timm's `pad_same` compute Pad's pads from Shape → Gather → Mod/Sub; `torch.roll`
exported by TorchScript slices at `Shape[d] - shift`; `as_strided` exported by dynamo
gathers at a Range over the sizes. The backward rules need those pads, starts and indices
as constants. They depend only on the spatial sizes, which are static even when the batch is
not: this pass evaluates every tensor computed from Shape/Size outputs whose value is known
that way (a partial evaluation: a shape vector may be known in some entries, the batch
entry not, and a Gather or Slice of its known entries is known) and replaces it by an
initializer. Anything that reads the batch size stays computed, so the explain model keeps
its dynamic batch; the values come from onnx's reference evaluator, node by node, so they
are what the runtime would compute.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

# A shape vector known in some entries: None where the dimension is symbolic.
Partial = list[int | None]

# Tensors larger than this are not folded: shape arithmetic is small, and a large value
# computed from sizes (an index map) would be stored in the model.
_MAX_ELEMENTS = 1 << 16

# Constant-only computations evaluated to feed the size arithmetic: scalars and short
# vectors (a QDQ model's dequantized constant 2.0 or 1.0).
_SMALL = 16

# Ops never evaluated here: random draws, and ops with subgraphs.
_NOT_EVALUATED = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
     "If", "Loop", "Scan", "SequenceMap"}
)  # fmt: skip


# Ops onnx's reference evaluator implements only from a later opset than a model may have,
# with the same meaning there (no block_size or float8 attribute set: those are refused).
_EVALUATED_FROM_OPSET = {"QuantizeLinear": 19, "DequantizeLinear": 19}


# Each round folds what the shapes known so far decide; a folded Reshape target makes the
# next layer's shapes known, so a deep net (a Swin's blocks) takes several rounds.
_MAX_ROUNDS = 64


def fold_shape_arithmetic(model: onnx.ModelProto, keep: Collection[str] = ()) -> bool:
    """Replaces, in place, each tensor computed only from static sizes by an initializer
    and drops the nodes no longer needed, shapes inferred again after each round. True
    when anything was folded."""
    folded_any = False
    # Read once: each round infers shapes again, which types a Cast's output by its `to`.
    declared = _declared_float_types(model.graph)
    for _ in range(_MAX_ROUNDS):
        if not _fold_round(model, keep, declared):
            break
        folded_any = True
        _infer_shapes_again(model)
    return folded_any


def _fold_round(
    model: onnx.ModelProto, keep: Collection[str], declared: dict[str, np.dtype]
) -> bool:
    graph = model.graph
    dims = _known_dims(graph)
    constants = _constants(graph)
    opsets = list(model.opset_import)
    full: dict[str, np.ndarray] = {}
    partial: dict[str, Partial] = {}
    derived: set[str] = set()  # computed from a Shape or Size output
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_EVALUATED:
            continue
        _evaluate(node, dims, constants, full, partial, derived, opsets, declared)
    pinned = set(keep) | {o.name for o in graph.output} | _read_by_subgraphs(graph)
    folded = {
        name: value
        for name, value in full.items()
        if name in derived and name not in pinned and value.size <= _MAX_ELEMENTS
    }
    if not folded:
        return False
    _rewrite(graph, folded, derived | set(partial), pinned)
    return True


def _declared_float_types(graph: onnx.GraphProto) -> dict[str, np.dtype]:
    """The float type the graph declares for each tensor (value_info).

    onnxconverter-common's float16 conversion declares the Cast to float of a size (the
    1/sqrt(head_dim) of scaled_dot_product_attention as TorchScript exports it) float16,
    as the Div it feeds takes, but leaves the Cast's `to` float32: the converted model is
    invalid as it stands (onnxruntime refuses the Cast). A size evaluated here takes the
    declared type, so that its readers see the one float type the graph has there."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    return {
        vi.name: np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        for vi in graph.value_info
        if vi.type.tensor_type.elem_type in floats
    }


def _infer_shapes_again(model: onnx.ModelProto) -> None:
    """Shapes downstream of a folded Pad or Slice are known only now. In place: callers
    hold the model (the batch methods build on the object they folded)."""
    del model.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inferred once already (prepare.py): what fails now is left unknown
        return
    model.graph.value_info.extend(inferred.graph.value_info)


def _evaluate(
    node: onnx.NodeProto,
    dims: dict[str, list[int | None]],
    constants: dict[str, np.ndarray],
    full: dict[str, np.ndarray],
    partial: dict[str, Partial],
    derived: set[str],
    opsets: list[onnx.OperatorSetIdProto],
    declared: dict[str, np.dtype],
) -> None:
    op, ins = node.op_type, [t for t in node.input]
    out = node.output[0] if node.output else ""

    def value(name: str) -> np.ndarray | None:
        return full.get(name, constants.get(name))

    def vector(name: str) -> Partial | None:
        """`name` as a 1-D int vector, known in some entries."""
        if name in partial:
            return partial[name]
        known = value(name)
        if known is not None and known.ndim == 1 and known.dtype.kind in "iu":
            return [int(v) for v in known]
        return None

    if op in ("Shape", "Size"):
        shape = dims.get(ins[0])
        if shape is None:
            return
        derived.add(out)
        if op == "Size":
            if all(d is not None for d in shape):
                full[out] = np.array(int(np.prod(shape)), np.int64)  # type: ignore[arg-type]
            return
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        _store(out, list(shape[slice(start, end)]), full, partial)
        return
    if not any(t in derived for t in ins if t):
        # A few numbers computed from constants alone: quantize_static writes the float
        # constants of shape arithmetic (timm's pad_same) as DequantizeLinear(QuantizeLinear(
        # c)), which the sizes' arithmetic then reads. Evaluated so that it can, not folded
        # (only what derives from a size is); larger constant-only tensors are weights.
        consts = [value(t) for t in ins if t]
        if consts and all(v is not None and v.size <= _SMALL for v in consts):
            _run(node, ins, value, full, opsets, declared)
        return
    derived.update(t for t in node.output if t)
    known = [value(t) for t in ins if t]
    if all(v is not None for v in known):
        if sum(int(v.size) for v in known if v is not None) <= _MAX_ELEMENTS:
            _run(node, ins, value, full, opsets, declared)
        return
    # Partly known shape vectors: the ops that pick or join their entries.
    if op == "Gather" and len(ins) == 2:
        source, indices = vector(ins[0]), value(ins[1])
        if source is None or indices is None or _axis(node) != 0 or indices.ndim > 1:
            return
        picked = [source[int(i)] for i in np.atleast_1d(indices)]
        if indices.ndim == 0:
            if picked[0] is not None:
                full[out] = np.array(picked[0], np.int64)
            return
        _store(out, picked, full, partial)
    elif op == "Slice" and len(ins) >= 3:
        source = vector(ins[0])
        bounds = [value(t) if t else None for t in ins[1:5]]
        if source is None or bounds[0] is None or bounds[1] is None:
            return
        axes = bounds[2] if len(bounds) > 2 and bounds[2] is not None else np.array([0])
        steps = bounds[3] if len(bounds) > 3 and bounds[3] is not None else np.array([1])
        if axes.size != 1 or int(axes.reshape(-1)[0]) not in (0, -1):
            return
        begin, stop, step = (int(v.reshape(-1)[0]) for v in (bounds[0], bounds[1], steps))
        _store(out, source[slice(begin, stop, step)], full, partial)
    elif op == "Concat" and _axis(node) in (0, -1):
        parts = [vector(t) for t in ins]
        if any(p is None for p in parts):
            return
        _store(out, [d for p in parts for d in p], full, partial)  # type: ignore[union-attr]
    elif op in ("Cast", "Identity") and ins[0] in partial:
        partial[out] = partial[ins[0]]


def _store(
    name: str, entries: Partial, full: dict[str, np.ndarray], partial: dict[str, Partial]
) -> None:
    if all(d is not None for d in entries):
        full[name] = np.array(entries, np.int64)
    else:
        partial[name] = entries


def _axis(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "axis"), 0)


def _run(
    node: onnx.NodeProto,
    ins: list[str],
    value: object,
    full: dict[str, np.ndarray],
    opsets: list[onnx.OperatorSetIdProto],
    declared: dict[str, np.dtype],
) -> None:
    """One node through onnx's reference evaluator; its outputs join `full`, a float one
    in the type the graph declares for it (see _declared_float_types)."""
    feeds = {t: value(t) for t in ins if t}  # type: ignore[operator]
    inputs = [
        helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for t, v in feeds.items()
    ]
    outputs = [helper.make_empty_tensor_value_info(t) for t in node.output if t]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    if node.op_type in _EVALUATED_FROM_OPSET:
        # onnx's evaluator has (De)QuantizeLinear from opset 19 only, whose per-tensor and
        # per-axis forms are opset 13's: quantize_static quantizes timm's float pad_same
        # arithmetic (MaxViT int8), and the pads must still fold.
        least = _EVALUATED_FROM_OPSET[node.op_type]
        opsets = [
            helper.make_opsetid("", max(o.version, least)) if o.domain in ("", "ai.onnx") else o
            for o in opsets
        ]
    try:
        results = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(
            None, feeds
        )
    except Exception:  # an op the evaluator lacks, or an input it refuses: left computed
        return
    for name, result in zip([t for t in node.output if t], results, strict=True):
        result = np.asarray(result)
        if result.dtype.kind == "f" and name in declared:
            result = result.astype(declared[name])
        full[name] = result


def _rewrite(
    graph: onnx.GraphProto, folded: dict[str, np.ndarray], derived: set[str], pinned: set[str]
) -> None:
    """The folded tensors as initializers, and what only the removed nodes read removed.

    Only that: a value nobody reads yet stays (a batch method's epilogue reads its
    prelude's tensors after this pass has run), and dead forward nodes are not this pass's
    business. Constant nodes and folded values read by the removed nodes alone go with
    them (runtimes warn about each initializer left unused)."""
    nodes = list(graph.node)
    for name, value in folded.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    removed = {id(n) for n in nodes if all(not t or t in folded for t in n.output)}

    def fed_only_to_removed(name: str) -> bool:
        return name in fed and name not in read

    changed = True
    while changed:  # then the shape nodes that fed only those
        fed = {t for n in nodes if id(n) in removed for t in n.input}
        read = {t for n in nodes if id(n) not in removed for t in n.input} | pinned
        changed = False
        for node in nodes:
            outs = [t for t in node.output if t]
            if id(node) in removed or not outs:
                continue
            if all(t in derived and fed_only_to_removed(t) for t in outs):
                removed.add(id(node))
                changed = True
    kept = [
        n
        for n in nodes
        if id(n) not in removed
        and not (n.op_type == "Constant" and fed_only_to_removed(n.output[0]))
    ]
    del graph.node[:]
    graph.node.extend(kept)
    # Of the initializers, this pass's own and the model's (a QDQ model's scales and zero
    # points of its quantized shape arithmetic), not a builder's: a builder may hold the
    # name of one it wrote earlier and read it again later (Builder.const caches them by
    # value), and its names all start with "onnxplain".
    for i in reversed(range(len(graph.initializer))):
        name = graph.initializer[i].name
        ours = name in folded or not name.startswith("onnxplain")
        if ours and fed_only_to_removed(name):
            del graph.initializer[i]
    info = [vi for vi in graph.value_info if vi.name not in folded]
    del graph.value_info[:]
    graph.value_info.extend(info)


def _known_dims(graph: onnx.GraphProto) -> dict[str, list[int | None]]:
    dims: dict[str, list[int | None]] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        tensor = vi.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims[vi.name] = [
            int(d.dim_value) if d.HasField("dim_value") else None for d in tensor.shape.dim
        ]
    for init in graph.initializer:
        dims[init.name] = list(init.dims)
    return dims


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Small initializers and Constant outputs (shape operands; weights are not read)."""
    values: dict[str, np.ndarray] = {}
    inputs = {vi.name for vi in graph.input}
    for init in graph.initializer:
        if init.name not in inputs and int(np.prod(init.dims)) <= _MAX_ELEMENTS:
            values[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _read_by_subgraphs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                names.update(t for n in sub.node for t in n.input)
                names |= _read_by_subgraphs(sub)
    return names
