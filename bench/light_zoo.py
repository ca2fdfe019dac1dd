"""The onnx package's light model zoo, with random weights in place of its constant fills.

`onnx/backend/test/data/light/light_<name>.onnx` are real architectures (Caffe2 exports,
opset 9, IR v3) whose weights were replaced by `ConstantOfShape` fills of 0.02. Timing a
net whose every unit sees the same value measures nothing useful (every ReLU mask is the
same, saliency maps are flat), so each fill becomes a random initializer by the role of
the tensor it feeds. The model otherwise stays as a user would have it: its
BatchNormalization nodes, and every weight listed as a graph input as IR v3 requires.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = ("resnet50", "vgg19")


def _draw(
    consumer: onnx.NodeProto, slot: int, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    op = consumer.op_type
    if op in ("Conv", "Gemm") and slot == 1:
        # He-normal over the inputs summed into each output: activations keep their scale
        # through any depth of ReLU layers, as in a trained net.
        transposed = op == "Gemm" and any(a.name == "transB" and a.i for a in consumer.attribute)
        fan_in = shape[1] if transposed else shape[0] if op == "Gemm" else int(np.prod(shape[1:]))
        return np.sqrt(2.0 / fan_in, dtype=np.float32) * rng.standard_normal(shape, np.float32)
    if op == "BatchNormalization" and slot in (1, 4):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)  # scale and variance near 1
    if (op, slot) in (
        ("Conv", 2),
        ("Gemm", 2),
        ("BatchNormalization", 2),
        ("BatchNormalization", 3),
    ):
        return rng.normal(0.0, 0.1, shape).astype(np.float32)  # biases and means near 0
    raise ValueError(f"no random draw for a weight feeding {op} input {slot}")


def redraw(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """`model` with every ConstantOfShape weight, and every BatchNorm statistic, drawn anew.

    The BatchNorm parameters some of these files keep as real initializers are the
    pretrained ones; on random conv weights they would blow activations up, so they are
    redrawn near the identity too.
    """
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph = m.graph
    consumers = {name: (node, slot) for node in graph.node for slot, name in enumerate(node.input)}
    inits = {t.name: t for t in graph.initializer}

    fills = [n for n in graph.node if n.op_type == "ConstantOfShape" and n.input[0] in inits]
    weights = []
    for fill in fills:
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[fill.input[0]]))
        value = _draw(*consumers[fill.output[0]], shape, rng)
        weights.append(numpy_helper.from_array(value, fill.output[0]))
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            continue
        for slot, name in enumerate(node.input[1:5], start=1):
            if name in inits:
                shape = tuple(inits[name].dims)
                value = _draw(node, slot, shape, rng)
                inits[name].CopyFrom(numpy_helper.from_array(value, name))

    spent = {fill.input[0] for fill in fills}
    keep_nodes = [n for n in graph.node if n not in fills]
    keep_inits = [t for t in graph.initializer if t.name not in spent]
    keep_inputs = [vi for vi in graph.input if vi.name not in spent]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(keep_nodes)
    graph.initializer.extend([*keep_inits, *weights])
    graph.input.extend(keep_inputs)  # IR v3: every initializer is a graph input too
    graph.input.extend(
        helper.make_tensor_value_info(w.name, onnx.TensorProto.FLOAT, list(w.dims)) for w in weights
    )
    return m


def load(name: str, seed: int = 0) -> onnx.ModelProto:
    """light_<name>.onnx from the installed onnx package, its weights redrawn."""
    return redraw(onnx.load(str(LIGHT / f"light_{name}.onnx")), seed)
