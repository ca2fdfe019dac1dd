"""Scalar constants at the rank they broadcast against (graph_rewrite/scalar_ranks.py): in a
squeeze-excitation net's explain model no size-1 constant of the backward pass broadcasts
against a tensor of higher rank (the check fails with the pass turned off), the map is bit
for bit the one without the pass and float64 autograd's, and a constant an op needs as a
scalar (Pad's value) or one against a tensor of unknown rank is left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from onnxplain.graph_rewrite import backward as backward_module
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.builder import Builder
from onnxplain.graph_rewrite.model_info import ModelInfo
from onnxplain.graph_rewrite.scalar_ranks import match_scalar_ranks
from torch import nn

from helpers.nets import export_onnx
from helpers.oracle import float64_gradient, relative_l2

CLASSES = 7


class Gated(nn.Module):
    """MobileNetV3's pieces: hard-sigmoid squeeze-excitation gates, HardSwish, a 1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.reduce = nn.Conv2d(32, 8, 1)
        self.expand = nn.Conv2d(8, 32, 1)
        self.head = nn.Conv2d(32, 48, 1)
        self.classifier = nn.Linear(48, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = nn.functional.hardswish(self.stem(x))
        gate = nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(a.mean((2, 3), True)))))
        pooled = (a * gate).mean((2, 3), True)
        return self.classifier(nn.functional.hardswish(self.head(pooled)).flatten(1))


@pytest.fixture(scope="module")
def gated() -> tuple[nn.Module, onnx.ModelProto]:
    torch.manual_seed(0)
    net = Gated().eval()
    with torch.no_grad():  # gate inputs spread over (-3, 3), where the slopes are not 0
        net.expand.weight.mul_(4.0)
    return net, export_onnx(net, torch.zeros(2, 3, 16, 16), softmax=False)


def _low_rank_scalars(explain: onnx.ModelProto, forward: onnx.ModelProto) -> int:
    """Backward nodes with a size-1 constant of lower rank than another of their inputs."""
    inferred = onnx.shape_inference.infer_shapes(explain)
    ranks = {
        vi.name: len(vi.type.tensor_type.shape.dim)
        for vi in (*inferred.graph.value_info, *inferred.graph.input)
        if vi.type.tensor_type.HasField("shape")
    }
    sizes = {t.name: (int(np.prod(t.dims)), len(t.dims)) for t in explain.graph.initializer}
    forward_nodes = {n.name for n in forward.graph.node}
    found = 0
    for node in explain.graph.node:
        if node.name in forward_nodes or node.op_type not in ("Mul", "Add", "Less", "Greater"):
            continue
        others = [ranks[t] for t in node.input if t in ranks]
        for t in node.input:
            if t in sizes and sizes[t][0] == 1 and others and sizes[t][1] < max(others):
                found += 1
    return found


def _saliency(explain: onnx.ModelProto, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(["saliency"], {"image": x, "output_grad": seed})
    return np.asarray(got)


def test_backward_scalars_take_the_rank_they_broadcast_against(
    gated: tuple[nn.Module, onnx.ModelProto], monkeypatch: pytest.MonkeyPatch
) -> None:
    net, model = gated
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    seed = rng.standard_normal((2, CLASSES)).astype(np.float32)
    matched = build_explain_model(model, "vanilla", target="onnxruntime")
    assert _low_rank_scalars(matched, model) == 0
    with monkeypatch.context() as patched:
        patched.setattr(backward_module, "match_scalar_ranks", lambda g: 0)
        plain = build_explain_model(model, "vanilla", target="onnxruntime")
    # The check can fail: without the pass the gates' slopes broadcast rank-0 scalars.
    assert _low_rank_scalars(plain, model) > 0
    got = _saliency(matched, x, seed)
    np.testing.assert_array_equal(got, _saliency(plain, x, seed))
    want = float64_gradient(net, x, lambda out: out * torch.from_numpy(seed).double())
    assert relative_l2(got, want) < 1e-5
    # No constant is left unused (onnxruntime would warn about each one at load).
    used = {t for n in matched.graph.node for t in n.input}
    assert {t.name for t in matched.graph.initializer} <= used


def _builder(shape: list[int | str] | None) -> Builder:
    """A builder over a one-node model whose input `x` has `shape` (None: unknown rank)."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return Builder(ModelInfo(model))


def _const(g: Builder, name: str) -> np.ndarray:
    (init,) = [t for t in g.initializers if t.name == name]
    return numpy_helper.to_array(init)


def test_a_scalar_an_op_needs_as_one_keeps_its_rank() -> None:
    g = _builder([1, 960, 1, 1])
    nan = g.scalar_like(float("nan"), "x")
    g.Pad("x", g.ints([0, 0, 1, 1, 0, 0, 1, 1]), nan)
    half = g.Mul("x", g.scalar_like(0.5, "x"))
    both = g.Mul(half, nan)  # nan is shared with the Pad
    assert match_scalar_ranks(g) == 2
    pad, mul, shared = g.nodes
    assert pad.input[2] == nan and _const(g, nan).shape == ()
    assert _const(g, mul.input[1]).shape == (1, 1, 1, 1) and _const(g, mul.input[1]) == 0.5
    assert shared.output[0] == both and _const(g, shared.input[1]).shape == (1, 1, 1, 1)
    # The 0.5 of rank 0 is used no more and is gone; the NaN, still Pad's, stays.
    assert [t.name for t in g.initializers if not t.dims] == [nan]


def test_a_tensor_of_unknown_rank_keeps_its_scalars() -> None:
    g = _builder(None)
    scalar = g.scalar_like(2.0, "x")
    g.Mul(g.Relu("x"), scalar)
    assert match_scalar_ranks(g) == 0
    assert g.nodes[-1].input[1] == scalar
