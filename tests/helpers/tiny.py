"""A small classifier built with onnx.helper, for tests of the explain-model contract."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(
    opset: int = 17, batch: int | str = "batch", weights_as_inputs: bool = False, seed: int = 0
) -> onnx.ModelProto:
    """image[N,3,8,8] → Conv/Relu → Conv(stride 2)/Relu → GlobalAveragePool → Gemm → Softmax."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5,
        "b1": rng.standard_normal(4).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((6, 4, 3, 3)).astype(np.float32) * 0.5,
        "fc_w": rng.standard_normal((5, 6)).astype(np.float32),
        "fc_b": rng.standard_normal(5).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8])]
    if weights_as_inputs:  # as old exporters (IR < 4) did: every weight is a graph input too
        inputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, list(w.shape))
            for n, w in weights.items()
        ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 5])],
        [numpy_helper.from_array(w, n) for n, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3 if weights_as_inputs else 8
    return model
