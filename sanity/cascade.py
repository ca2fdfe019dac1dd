"""Cascading randomisation of an ONNX model's weights, from the logits downward.

Adebayo et al. 2018 re-draw the weights of the top layer, then of the top two, and so on
down to the input: if a saliency map barely changes while the network is destroyed, the
map explains the input, not the model. Here a "layer" is a node that holds learned
parameters as initializers (Conv, ConvTranspose, Gemm, MatMul, the scale and bias of a
normalisation); nodes are visited in reverse graph order, which ONNX keeps topological.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# Which inputs of each op are learned parameters. BatchNormalization's running mean and
# variance (inputs 3, 4) are statistics of the data: a random variance could be negative.
_PARAMETER_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "PRelu": (1,),
}

# Re-draws one initializer: (name, original value, the layer's fan-in) -> a new value of
# the same shape and dtype.
Draw = Callable[[str, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Layer:
    name: str  # the node's name, or op type and position when it has none
    op_type: str
    initializers: tuple[str, ...]  # the float initializers it owns, in input order
    fan_in: int  # inputs that feed one output unit, as PyTorch's initialisers count them


def parameter_layers(model: onnx.ModelProto) -> list[Layer]:
    """The model's parameter layers from the output side to the input side.

    An initializer read by several nodes belongs to the one nearest the output, so each
    is randomised once, at the first step that reaches it.
    """
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    floats = {t.name for t in model.graph.initializer if t.data_type in float_types}
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in model.graph.initializer}
    seen: set[str] = set()
    layers: list[Layer] = []
    nodes = list(model.graph.node)
    for position in range(len(nodes) - 1, -1, -1):
        node = nodes[position]
        slots = _PARAMETER_INPUTS.get(node.op_type, ())
        owned = tuple(
            node.input[i]
            for i in slots
            if i < len(node.input) and node.input[i] in floats and node.input[i] not in seen
        )
        if owned:
            seen.update(owned)
            name = node.name or f"{node.op_type}_{position}"
            layers.append(Layer(name, node.op_type, owned, _fan_in(node, shapes)))
    return layers


def _fan_in(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if node.op_type in ("Conv", "ConvTranspose") and weight and len(weight) > 1:
        # PyTorch counts dim 1 times the kernel for both (for ConvTranspose: out/groups).
        return max(1, int(np.prod(weight[1:])))
    if node.op_type == "Gemm" and weight and len(weight) == 2:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return weight[1] if trans_b else weight[0]
    if node.op_type == "MatMul" and weight and len(weight) >= 2:
        return weight[-2]
    # Normalisation scale/bias and PRelu slopes: one value per channel.
    channels = shapes.get(node.input[1]) if len(node.input) > 1 else None
    return max(1, int(np.prod(channels))) if channels else 1


def reinit_draw(seed: int) -> Draw:
    """Every tensor re-drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weights and biases alike.

    This is what PyTorch's `reset_parameters` does for Conv and Linear layers, and so what
    Quantus's MPRT does to a torch model: the layer is returned to an untrained state.
    """
    rng = np.random.default_rng(seed)

    def draw(name: str, value: np.ndarray, fan_in: int) -> np.ndarray:
        del name
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=value.shape).astype(value.dtype)

    return draw


def cascade(
    model: onnx.ModelProto, draw: Draw, layers: list[Layer] | None = None
) -> Iterator[tuple[Layer, onnx.ModelProto]]:
    """For each layer from the top: a copy of the model with it and all above it re-drawn."""
    current = onnx.ModelProto()
    current.CopyFrom(model)
    for layer in parameter_layers(model) if layers is None else layers:
        by_name = {t.name: t for t in current.graph.initializer}
        for name in layer.initializers:
            tensor = by_name[name]
            value = numpy_helper.to_array(tensor)
            new = np.asarray(draw(name, value, layer.fan_in), dtype=value.dtype)
            if new.shape != value.shape:
                raise ValueError(f"draw for {name} gave shape {new.shape}, expected {value.shape}")
            tensor.CopyFrom(numpy_helper.from_array(new, name))
        snapshot = onnx.ModelProto()
        snapshot.CopyFrom(current)
        yield layer, snapshot
