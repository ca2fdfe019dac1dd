"""Grad-CAM's candidate layers, for a model without a default one (layers.py): a detector,
a segmenter, a recogniser, whose explained output is itself a map or a sequence.

A candidate is a stage's last feature map [N, C, spatial...]: the one that a change of
resolution takes next (a strided conv or pool, an upsampling), or that a head turns into
predictions (a Reshape of a detector's head; flagged). pytorch-grad-cam's recipes pick
among these: a segmenter's last backbone stage, a detector's neck before its head. Not
feature maps, so never listed: the input sliced or scaled (YOLOX's Focus, a
normalisation), a Pad's output (seen through: TensorFlow pads before every conv), the
inside of an attention ([N, heads, T, d] has a map's rank), and a squeeze-excitation's
pooled vector (it goes back into the map, so the map's stage goes on).
"""

from __future__ import annotations

import onnx
from onnx import shape_inference

from .builder import Node
from .layers import is_spatial
from .model_info import ModelInfo
from .walk import Path

# Ops that move or scale a tensor and compute nothing new from it.
_MOVES_OR_SCALES = {
    "Add", "Cast", "Concat", "DepthToSpace", "Div", "Expand", "Flatten", "Gather", "Identity",
    "Mul", "Pad", "Reshape", "Slice", "SpaceToDepth", "Split", "Squeeze", "Sub", "Transpose",
    "Unsqueeze", "Where",
}  # fmt: skip
_PRODUCTS = {"Einsum", "MatMul"}


def sized_view(model: onnx.ModelProto, input_name: str, size: int = 256) -> ModelInfo:
    """The model's tensor shapes at one example input size, where its input has free
    dimensions (batch 1, each other free dimension `size`): with dynamic H and W every op
    gets a size symbol of its own, and no two feature maps could be told the same size.
    The model's own shapes where inference fails or nothing is free."""
    inputs = {vi.name: vi for vi in model.graph.input}
    dims = inputs[input_name].type.tensor_type.shape.dim if input_name in inputs else []
    if all(d.HasField("dim_value") for d in dims):
        return ModelInfo(model)
    sized = onnx.ModelProto()
    sized.CopyFrom(model)
    del sized.graph.value_info[:]
    graph_input = next(vi for vi in sized.graph.input if vi.name == input_name)
    for i, dim in enumerate(graph_input.type.tensor_type.shape.dim):
        if not dim.HasField("dim_value"):
            dim.dim_value = 1 if i == 0 else size
    try:
        return ModelInfo(shape_inference.infer_shapes(sized, strict_mode=False, data_prop=True))
    except Exception:  # shape inference raises bare exceptions; the dynamic shapes then
        return ModelInfo(model)


def candidate_layers(info: ModelInfo, path: Path) -> list[tuple[str, bool]]:
    """The candidates on `path`, in path order, each with True where a head takes it."""
    readers = _readers(path)
    interior = _attention_interior(info, path, readers)
    after = _after_the_maps(info, path, readers, interior)
    raw = _the_input_moved(path)

    def grid(name: str) -> tuple[object, ...] | None:
        return None if name in interior else _grid(info, name)

    def leaves(extent: tuple[object, ...], reader: Node) -> str | None:
        """ "head" or "stage" where `reader` takes a map of `extent` elsewhere, else None."""
        for out in (o for o in reader.outputs if o in path.tensors):
            if reader.op_type == "Pad":
                kinds = {leaves(extent, r) for r in readers.get(out, [])} - {None}
                if kinds:
                    return "stage" if "stage" in kinds else "head"
            elif grid(out) is None:
                if out in after:
                    return "head"
            elif grid(out) != extent:
                return "stage"
        return None

    found = []
    for node in path.nodes:
        for t in node.outputs:
            extent = grid(t) if t in path.tensors else None
            if extent is None or node.op_type == "Pad" or t in raw:
                continue
            kinds = {leaves(extent, r) for r in readers.get(t, [])} - {None}
            if kinds:
                found.append((t, "stage" not in kinds))
    return found


def _grid(info: ModelInfo, name: str) -> tuple[object, ...] | None:
    """The spatial extent of a 4-D or 5-D feature map [N, C, spatial...], else None."""
    shape = info.info(name).shape
    if shape is None or len(shape) not in (4, 5) or not is_spatial(info, name):
        return None
    return tuple(shape[2:])


def _readers(path: Path) -> dict[str, list[Node]]:
    readers: dict[str, list[Node]] = {}
    for node in path.nodes:
        for t in dict.fromkeys(node.inputs):
            if t in path.tensors:
                readers.setdefault(t, []).append(node)
    return readers


def _attention_interior(info: ModelInfo, path: Path, readers: dict[str, list[Node]]) -> set[str]:
    """The scores (a product of two computed tensors, their Softmax), their products with
    the values, what only moves, scales or masks those, and what goes only into them (the
    query, key and value split apart). A token mixer's output reshaped from a norm is
    not inside: it is a feature map again."""

    def mixes(node: Node) -> bool:
        # Two computed operands (cross-attention's queries may come from constants alone,
        # off the input's path); a Linear layer's MatMul has one and a weight.
        computed = [t for t in node.inputs if t and info.constant(t) is None]
        return node.op_type == "Softmax" or (node.op_type in _PRODUCTS and len(computed) > 1)

    inside: set[str] = set()
    for node in path.nodes:
        ins = [t for t in node.inputs if t in path.tensors]
        if mixes(node) or (ins and set(ins) <= inside and node.op_type in _MOVES_OR_SCALES):
            inside.update(node.outputs)
    for node in reversed(path.nodes):
        for t in node.outputs:
            into = readers.get(t, [])
            if into and all(
                mixes(r)
                or (
                    r.op_type in _MOVES_OR_SCALES
                    and {o for o in r.outputs if o in path.tensors} <= inside
                )
                for r in into
            ):
                inside.add(t)
    return inside


def _after_the_maps(
    info: ModelInfo, path: Path, readers: dict[str, list[Node]], interior: set[str]
) -> set[str]:
    """Tensors that no feature map follows on the way to the output: a head's."""
    after: set[str] = set()
    for node in reversed(path.nodes):
        for t in node.outputs:
            later = {o for r in readers.get(t, []) for o in r.outputs if o in path.tensors}
            not_a_map = t in interior or _grid(info, t) is None
            if t in path.tensors and not_a_map and later <= after:
                after.add(t)
    return after


def _the_input_moved(path: Path) -> set[str]:
    """The input and what only moves or scales it: nothing computed from it yet."""
    produced = {t for node in path.nodes for t in node.outputs}
    raw = {t for t in path.tensors if t not in produced}
    for node in path.nodes:
        ins = [t for t in node.inputs if t in path.tensors]
        if ins and set(ins) <= raw and node.op_type in _MOVES_OR_SCALES:
            raw.update(node.outputs)
    return raw
