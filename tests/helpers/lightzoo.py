"""The nine architectures of onnx's `backend/test/data/light/`, with real weights drawn.

These opset-9, IR-3 models come with every weight as a ConstantOfShape fill (0.02
everywhere), so each fill is redrawn at random, by the role of the tensor it feeds
(He-normal conv and Gemm weights, BatchNorm statistics near the identity), seeded.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxplain.graph_rewrite import default_input

from helpers.nets import TORCH_OPS, node_attributes

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = [
    "bvlc_alexnet",
    "squeezenet",
    "shufflenet",
    "zfnet512",
    "inception_v1",
    "densenet121",
    "inception_v2",
    "resnet50",
    "vgg19",
]


# ---------------------------------------------------------------- redrawing weights


def _consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            uses[name].append((node, i))
    return uses


def _use(
    name: str, uses: dict[str, list[tuple[onnx.NodeProto, int]]]
) -> tuple[onnx.NodeProto, int, str]:
    """The op a weight feeds, its input slot there and its name there, past Unsqueeze/Reshape."""
    node, slot = uses[name][0]
    if node.op_type in ("Unsqueeze", "Reshape") and slot == 0:
        return _use(node.output[0], uses)
    return node, slot, name


def _fan_in(consumer: onnx.NodeProto, shape: list[int]) -> int:
    """Inputs summed into each output unit, from the weight's shape where it is used."""
    if consumer.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in consumer.attribute)
        return shape[1] if trans_b else shape[0]
    return int(np.prod(shape[1:]))


def _draw(
    shape: tuple[int, ...],
    use: tuple[onnx.NodeProto, int, str],
    shapes_there: dict[str, list[int]],
    rng: np.random.Generator,
) -> np.ndarray:
    consumer, slot, name_there = use
    op = consumer.op_type
    if op in ("Conv", "Gemm") and slot == 1:
        # He-normal: keeps the activations' scale through a ReLU net of any depth.
        fan_in = _fan_in(consumer, shapes_there[name_there])
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if (op, slot) in (("BatchNormalization", 1), ("BatchNormalization", 4), ("Mul", 1)):
        return rng.uniform(0.5, 1.5, shape)  # scales and variances near 1
    if (op, slot) in (
        ("Conv", 2), ("Gemm", 2), ("BatchNormalization", 2), ("BatchNormalization", 3), ("Add", 1)
    ):  # fmt: skip
        return rng.normal(0.0, 0.1, shape)  # biases and means near 0
    raise AssertionError(f"no initialisation for a weight feeding {op} input {slot}")


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*inferred.graph.value_info, *inferred.graph.input]
    }


def calibrate_batchnorm(model: onnx.ModelProto, image: np.ndarray) -> None:
    """Sets every BatchNormalization's statistics to those of its input on `image`, in place.

    Random weights leave the running statistics meaningless, and residual sums or the
    pretrained statistics left in some of these files blow activations up by 1e4-1e6:
    statistics measured layer by layer keep every normalised activation near unit scale.
    """
    inits = {t.name: t for t in model.graph.initializer}
    values = {n: torch.from_numpy(numpy_helper.to_array(t).copy()) for n, t in inits.items()}
    values[default_input(model)] = torch.from_numpy(image)
    for node in model.graph.node:
        args = [values[n] for n in node.input]
        if node.op_type == "BatchNormalization":
            mean, var = node.input[3], node.input[4]
            values[mean] = args[0].mean(dim=(0, 2, 3))
            values[var] = args[0].var(dim=(0, 2, 3), unbiased=False)
            for name in (mean, var):
                inits[name].CopyFrom(numpy_helper.from_array(values[name].numpy(), name))
            args = [values[n] for n in node.input]
        if node.op_type == "Softmax":
            return
        op = torch.relu if node.op_type == "Relu" else TORCH_OPS[node.op_type]
        with torch.no_grad():
            values[node.output[0]] = op(*args, **node_attributes(node))


def redraw_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """`model` with each ConstantOfShape weight replaced by a random initializer."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph = m.graph
    uses = _consumers(m)
    shapes_there = _inferred_shapes(m)
    fill_inputs = {n.input[0] for n in graph.node if n.op_type == "ConstantOfShape"}
    fill_shapes = {
        t.name: tuple(int(v) for v in numpy_helper.to_array(t))
        for t in graph.initializer
        if t.name in fill_inputs
    }
    fills = [n for n in graph.node if n.op_type == "ConstantOfShape" and n.input[0] in fill_shapes]
    weights = []
    for fill in fills:
        name, shape = fill.output[0], fill_shapes[fill.input[0]]
        value = _draw(shape, _use(name, uses), shapes_there, rng).astype(np.float32)
        weights.append(numpy_helper.from_array(value, name))
    spent = {fill.input[0] for fill in fills}
    keep_nodes = [n for n in graph.node if n not in fills]
    keep_inits = [t for t in graph.initializer if t.name not in spent]
    keep_inputs = [vi for vi in graph.input if vi.name not in spent]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(keep_nodes)
    graph.initializer.extend([*keep_inits, *weights])
    # IR 3 lists every initializer as a graph input too; keep the model that old.
    graph.input.extend(keep_inputs)
    graph.input.extend(
        helper.make_tensor_value_info(w.name, onnx.TensorProto.FLOAT, list(w.dims)) for w in weights
    )
    calibrate_batchnorm(m, image_for(m, seed=seed + 1)[1])
    onnx.checker.check_model(m)
    return m


def image_for(model: onnx.ModelProto, seed: int = 1) -> tuple[str, np.ndarray]:
    """The explained input's name and a random image for it."""
    name = default_input(model)
    vi = next(vi for vi in model.graph.input if vi.name == name)
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return name, np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def load(name: str) -> onnx.ModelProto:
    """Light model `name` with its weights redrawn."""
    return redraw_weights(onnx.load(str(LIGHT / f"light_{name}.onnx")))
