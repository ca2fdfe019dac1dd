"""Grad-CAM's default layer: the last spatial tensor before global pooling or flattening.

"Spatial": rank 3 to 5 with some spatial extent not known to be 1, read both channels-first
(N, C, spatial...) and channels-last (N, spatial..., C): a global pool's [N, C, 1, 1] is not
spatial, nor is the [N, 1, 1, C] that a channels-last LayerNorm after the pool makes of it
(timm's LayerNorm2d in ConvNeXt, MaxViT and PoolFormer heads), nor one token [N, 1, C].
A tensor is in the model's "head" when it is not spatial and nothing spatial follows it on
the path to the output (a squeeze-excitation branch's pooled vector is multiplied back into
a feature map, so it is not in the head).
The default layer is the spatial input of the last node that leads into the head: the
input of ResNet's GlobalAveragePool, of VGG's Flatten (its last MaxPool's output).
A model whose explained output is itself spatial (a detector's map) has none; its
candidate layers are then the stage outputs (candidate_layers below).

Token models: where that layer is a token tensor [N, tokens, C] (ViT's final norm), the
head often reads one class token, and everything after the last attention is per token:
no gradient reaches the patch tokens there, and the map would be all zero. The default is
then the output of the last LayerNormalization before the last Softmax (attention), the
last block's norm1, as pytorch-grad-cam's docs advise for ViT.
"""

from __future__ import annotations

import onnx
from onnx import shape_inference

from .builder import Node
from .model_info import ModelInfo
from .walk import Path


def is_spatial(info: ModelInfo, name: str) -> bool:
    shape = info.info(name).shape
    if shape is None or not 3 <= len(shape) <= 5:
        return False
    channels_first, channels_last = shape[2:], shape[1:-1]
    return any(d != 1 for d in channels_first) and any(d != 1 for d in channels_last)


def last_spatial_layer(info: ModelInfo, path: Path) -> str | None:
    """The default Grad-CAM layer on `path` (from differentiated_path), or None."""
    consumers: dict[str, list[list[str]]] = {}
    for node in path.nodes:
        outs = [t for t in node.outputs if t in path.tensors]
        for t in node.inputs:
            if t in path.tensors:
                consumers.setdefault(t, []).append(outs)
    head: set[str] = set()
    # Reverse topological order: every consumer's outputs are settled before the tensor.
    for node in reversed(path.nodes):
        for t in node.outputs:
            settled = all(o in head for outs in consumers.get(t, []) for o in outs)
            if t in path.tensors and settled and not is_spatial(info, t):
                head.add(t)
    for node in reversed(path.nodes):
        outs = [t for t in node.outputs if t in path.tensors]
        if not outs or not all(o in head for o in outs):
            continue
        spatial_inputs = [t for t in node.inputs if t in path.tensors and is_spatial(info, t)]
        if spatial_inputs:
            if info.info(spatial_inputs[0]).rank == 3:
                return last_norm_before_attention(path) or spatial_inputs[0]
            return spatial_inputs[0]
    return None


def last_norm_before_attention(path: Path) -> str | None:
    """The output of the last LayerNormalization before the path's last Softmax, or None."""
    softmaxes = [i for i, n in enumerate(path.nodes) if n.op_type == "Softmax"]
    if not softmaxes:
        return None
    for node in reversed(path.nodes[: softmaxes[-1]]):
        if node.op_type == "LayerNormalization" and node.outputs[0] in path.tensors:
            return node.outputs[0]
    return None


def _grid(info: ModelInfo, name: str) -> tuple[object, ...] | None:
    """The spatial extent of a 4-D or 5-D feature map [N, C, spatial...], else None."""
    shape = info.info(name).shape
    if shape is None or len(shape) not in (4, 5) or not is_spatial(info, name):
        return None
    return tuple(shape[2:])


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
    for i, dim in enumerate(
        next(vi for vi in sized.graph.input if vi.name == input_name).type.tensor_type.shape.dim
    ):
        if not dim.HasField("dim_value"):
            dim.dim_value = 1 if i == 0 else size
    try:
        return ModelInfo(shape_inference.infer_shapes(sized, strict_mode=False, data_prop=True))
    except Exception:  # shape inference raises bare exceptions; the dynamic shapes then
        return ModelInfo(model)


_MOVES_OR_SCALES = {
    "Add", "Cast", "Concat", "DepthToSpace", "Div", "Expand", "Flatten", "Gather", "Identity",
    "Mul", "Pad", "Reshape", "Slice", "SpaceToDepth", "Split", "Squeeze", "Sub", "Transpose",
    "Unsqueeze",
}  # fmt: skip


def candidate_layers(info: ModelInfo, path: Path) -> list[tuple[str, bool]]:
    """Feature maps a user of a model without a default layer (a detector, a segmenter)
    would pick, in path order: each stage's last map, the one that a change of resolution
    takes (a strided conv or pool, an upsampling), and the maps a head turns into
    predictions (a Reshape of a detector's head), flagged True. pytorch-grad-cam's recipes
    pick among these: a backbone's last stage (segmenters), a neck's output (detectors).

    A squeeze-excitation pool changes no stage (its vector goes back into the map). A Pad
    is seen through: TensorFlow exports pad before every conv, strided or not."""
    produced = {t: node for node in path.nodes for t in node.outputs}
    readers: dict[str, list[Node]] = {}
    for node in path.nodes:
        for t in dict.fromkeys(node.inputs):
            if t in path.tensors:
                readers.setdefault(t, []).append(node)
    # Tensors after the feature maps: nothing with a spatial grid follows them.
    after_maps: set[str] = set()
    for node in reversed(path.nodes):
        for t in node.outputs:
            later = [o for r in readers.get(t, []) for o in r.outputs if o in path.tensors]
            if t in path.tensors and _grid(info, t) is None and set(later) <= after_maps:
                after_maps.add(t)

    def leaves(grid: tuple[object, ...], reader: Node) -> str | None:
        """ "head" or "stage" where `reader` takes a map of `grid` elsewhere, else None."""
        for out in (o for o in reader.outputs if o in path.tensors):
            if reader.op_type == "Pad":
                kinds = {leaves(grid, r) for r in readers.get(out, [])} - {None}
                if kinds:
                    return "stage" if "stage" in kinds else "head"
            elif _grid(info, out) is None:
                if out in after_maps:
                    return "head"
            elif _grid(info, out) != grid:
                return "stage"
        return None

    # The input moved about or scaled (YOLOX's Focus slices, a normalisation) is no
    # feature map: nothing has been computed from it yet.
    raw = {t for t in path.tensors if t not in produced}
    for node in path.nodes:
        ins = [t for t in node.inputs if t in path.tensors]
        if ins and set(ins) <= raw and node.op_type in _MOVES_OR_SCALES:
            raw.update(node.outputs)
    found = []
    for t, source in produced.items():
        grid = _grid(info, t) if t in path.tensors else None
        if grid is None or source.op_type == "Pad" or t in raw:
            continue
        kinds = {leaves(grid, r) for r in readers.get(t, [])} - {None}
        if kinds:
            found.append((t, "stage" not in kinds))
    return found
