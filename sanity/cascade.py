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

# Re-draws one initializer: (name, original value) -> new value of the same shape and dtype.
Draw = Callable[[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Layer:
    name: str  # the node's name, or op type and position when it has none
    op_type: str
    initializers: tuple[str, ...]  # the float initializers it owns, in input order


def parameter_layers(model: onnx.ModelProto) -> list[Layer]:
    """The model's parameter layers from the output side to the input side.

    An initializer read by several nodes belongs to the one nearest the output, so each
    is randomised once, at the first step that reaches it.
    """
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    floats = {t.name for t in model.graph.initializer if t.data_type in float_types}
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
            layers.append(Layer(node.name or f"{node.op_type}_{position}", node.op_type, owned))
    return layers


def gaussian_draw(seed: int) -> Draw:
    """Each tensor re-drawn from a normal with its own mean and standard deviation.

    Keeping each tensor's scale keeps the randomised net's activations in the original's
    range, so a map changes because the weights lost their structure, not because the
    signal vanished or blew up.
    """
    rng = np.random.default_rng(seed)

    def draw(name: str, value: np.ndarray) -> np.ndarray:
        del name
        std = float(value.std()) if value.size > 1 else abs(float(value.mean()))
        new = rng.normal(float(value.mean()), std, size=value.shape)
        return new.astype(value.dtype)

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
            new = np.asarray(draw(name, value), dtype=value.dtype)
            if new.shape != value.shape:
                raise ValueError(f"draw for {name} gave shape {new.shape}, expected {value.shape}")
            tensor.CopyFrom(numpy_helper.from_array(new, name))
        snapshot = onnx.ModelProto()
        snapshot.CopyFrom(current)
        yield layer, snapshot
