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
candidate layers are then the stage outputs (candidates.py).

Token models: where that layer is a token tensor [N, tokens, C] (ViT's final norm), the
head often reads one class token, and everything after the last attention is per token:
no gradient reaches the patch tokens there, and the map would be all zero. The default is
then the output of the last LayerNormalization before the last Softmax (attention), the
last block's norm1, as pytorch-grad-cam's docs advise for ViT.
"""

from __future__ import annotations

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
