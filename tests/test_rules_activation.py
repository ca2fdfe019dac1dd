"""Activation rules against central finite differences."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import build_explain_model

from helpers import runtimes
from helpers.fd import assert_vjp_matches, session, single_op_model

RNG = np.random.default_rng(1)
X = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)

CASES = [
    ("Relu", {}, {}),
    ("LeakyRelu", {"alpha": 0.1}, {}),
    ("Sigmoid", {}, {}),
    ("Tanh", {}, {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, {}),
    ("HardSwish", {}, {}),
    ("Erf", {}, {}),
    ("Softmax", {"axis": 1}, {}),
    ("Softmax", {"axis": -1}, {}),
    ("LogSoftmax", {"axis": 1}, {}),
    ("Clip", {}, {"lo": np.array(0.0, np.float32), "hi": np.array(0.5, np.float32)}),
    ("PRelu", {}, {"slope": RNG.uniform(0.1, 0.3, (3, 1, 1)).astype(np.float32)}),
    ("Celu", {}, {}),
    ("Celu", {"alpha": 0.5}, {}),
    ("Softsign", {}, {}),
]

# Activations with a kink or a jump (Selu's slope jumps at 0, ThresholdedRelu's output at
# alpha): onnxruntime has no float64 kernel for them, and float32 central differences
# across a kink are wrong, so their oracle is torch's float64 autograd on the same input.
KINKED = [
    ("Selu", {}, lambda t, torch: torch.nn.functional.selu(t)),
    (
        "Selu",
        {"alpha": 1.2, "gamma": 0.8},
        lambda t, torch: 0.8 * torch.where(t > 0, t, 1.2 * (torch.exp(t) - 1)),
    ),
    ("ThresholdedRelu", {}, lambda t, torch: torch.nn.functional.threshold(t, 1.0, 0.0)),
    (
        "ThresholdedRelu",
        {"alpha": 0.3},
        lambda t, torch: torch.nn.functional.threshold(t, 0.3, 0.0),
    ),
]


@pytest.mark.parametrize(
    ("op", "attrs", "reference"), KINKED, ids=[f"{c[0]}-{i}" for i, c in enumerate(KINKED)]
)
def test_kinked_activation_matches_torch(op: str, attrs: dict, reference) -> None:
    torch = pytest.importorskip("torch")
    explain = build_explain_model(single_op_model(op, {"x": X}, attrs), "vanilla")
    dy = RNG.standard_normal(X.shape).astype(np.float32)
    (ours,) = session(explain).run(["saliency"], {"x": X, "output_grad": dy})
    t = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    (reference(t, torch) * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    assert t.grad is not None
    np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("op", "attrs", "consts"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_activation_matches_finite_differences(op: str, attrs: dict, consts: dict) -> None:
    model = single_op_model(op, {"x": X}, attrs, consts)
    assert_vjp_matches(model, {"x": X}, wrt="x")


# Exact zeros (a third of post-ReLU values), signed zeros, the smallest normal float32,
# 2^-127 (the smallest positive float the mask still counts as positive), huge and
# infinite values.
_EDGE = [0.0, -0.0, 2.0**-127, 2.0**-126, 1e-30, 1e-7, 1.0, 3e38, np.inf, -(2.0**-126), -1.0]
_EDGE += [-np.inf]


def _mask_model(op: str, x: np.ndarray):
    consts = {"slope": np.zeros((1, 1, 1), np.float32)} if op == "PRelu" else {}
    attrs = {"alpha": 0.0} if op == "LeakyRelu" else {}  # slope 0 below: the mask alone
    return single_op_model(op, {"x": x}, attrs, consts)


@pytest.mark.parametrize("target", ["portable", "onnxruntime"])
@pytest.mark.parametrize("op", ["Relu", "LeakyRelu", "PRelu"])
def test_float32_positive_mask_is_exact(op: str, target: str) -> None:
    """The float32 mask (one HardSigmoid) is exactly [x > 0] from 2^-127 up, zeros included,
    on both targets."""
    x = np.array(_EDGE, np.float32).reshape(1, 1, 1, -1)
    explain = build_explain_model(_mask_model(op, x), "vanilla", target=target)
    assert "HardSigmoid" in {n.op_type for n in explain.graph.node}
    (saliency,) = session(explain).run(["saliency"], {"x": x, "output_grad": np.ones_like(x)})
    np.testing.assert_array_equal(saliency, (x > 0).astype(np.float32))


@pytest.mark.parametrize("target", ["portable", "onnxruntime"])
@pytest.mark.parametrize("method", ["vanilla", "guided"])
def test_relu_mask_agrees_on_openvino(method: str, target: str) -> None:
    """Both targets' masks give onnxruntime's [x > 0] on OpenVINO CPU, at exact zeros too.

    OpenVINO 2026.4.1 reads a HardSigmoid beta of exactly 0.0 as the default 0.5: with it,
    every dead unit's mask was 0.5.
    """
    ov = pytest.importorskip("openvino")
    x = np.array(_EDGE, np.float32).reshape(1, 1, 1, -1)
    explain = build_explain_model(_mask_model("Relu", x), method, target=target)
    feeds = {"x": x, "output_grad": np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape)}
    (ours,) = session(explain).run(["saliency"], feeds)
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(explain.SerializeToString(), b""),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32"},
    )
    np.testing.assert_array_equal(compiled(feeds)["saliency"], ours)


def test_float32_mask_survives_bfloat16() -> None:
    """An engine that runs the float32 graph in bfloat16 gets the same mask: the
    HardSigmoid's constants and result, rounded to bfloat16 (by torch), still give exactly
    [x > 0]."""
    torch = pytest.importorskip("torch")
    x = np.array(_EDGE, np.float32).reshape(1, 1, 1, -1)
    explain = build_explain_model(_mask_model("Relu", x), "vanilla")
    (mask,) = [n for n in explain.graph.node if n.op_type == "HardSigmoid"]
    attrs = {a.name: a.f for a in mask.attribute}
    bf16 = torch.bfloat16
    alpha, beta = torch.tensor(attrs["alpha"], dtype=bf16), torch.tensor(attrs["beta"], dtype=bf16)
    assert torch.isfinite(alpha) and beta < 0
    xb = torch.tensor(x, dtype=bf16)
    result = torch.clamp(alpha * xb + beta, 0, 1)
    np.testing.assert_array_equal(result.float().numpy(), (x > 0).astype(np.float32))


def test_sigmoid_gradient_keeps_its_precision_where_sigmoid_saturates() -> None:
    """σ'(x) at x up to 80, where σ(x) is 1 in float32: the exact value (σ(x)·σ(-x), in
    float64), not 0 or a few ulps of 1 - σ."""
    x = np.array([0.0, 5.0, 17.0, 20.0, 40.0, 80.0, -20.0, -80.0], np.float32).reshape(1, -1)
    explain = build_explain_model(single_op_model("Sigmoid", {"x": x}), "vanilla")
    (got,) = session(explain).run(["saliency"], {"x": x, "output_grad": np.ones_like(x)})
    x64 = x.astype(np.float64)
    want = np.exp(-np.abs(x64)) / (1.0 + np.exp(-np.abs(x64))) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("runtime", runtimes.others())
def test_newer_activations_agree_across_runtimes(runtime: str) -> None:
    """The rules added for modern exports (Mish, Selu, Celu, Softsign, ThresholdedRelu,
    Sin, Cos, GroupNormalization) give the same map on every runtime."""
    chain = [
        ("Mish", {}),
        ("Selu", {}),
        ("Celu", {"alpha": 0.5}),
        ("Softsign", {}),
        ("ThresholdedRelu", {"alpha": -0.2}),
        ("Sin", {}),
        ("Cos", {}),
    ]
    nodes, last = [], "x"
    for i, (op, attrs) in enumerate(chain):
        nodes.append(onnx.helper.make_node(op, [last], [f"t{i}"], **attrs))
        last = f"t{i}"
    scale = onnx.numpy_helper.from_array(RNG.standard_normal(3).astype(np.float32), "scale")
    bias = onnx.numpy_helper.from_array(RNG.standard_normal(3).astype(np.float32), "bias")
    nodes.append(
        onnx.helper.make_node("GroupNormalization", [last, "scale", "bias"], ["y"], num_groups=3)
    )
    shape = list(X.shape)
    graph = onnx.helper.make_graph(
        nodes,
        "newer_activations",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)],
        [scale, bias],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    model.ir_version = 10
    explain = build_explain_model(model, "vanilla")
    feeds = {"x": X, "output_grad": RNG.standard_normal(X.shape).astype(np.float32)}
    (reference,) = runtimes.load(runtimes.REFERENCE, explain)(feeds, ["saliency"])
    (other,) = runtimes.load(runtime, explain)(feeds, ["saliency"])
    assert np.linalg.norm(other - reference) <= 1e-5 * np.linalg.norm(reference)


def _silu_graph(sigmoid_first: bool, shared: bool) -> onnx.ModelProto:
    """y = x·Sigmoid(x) as exporters write SiLU (either operand order); with `shared`, σ
    also feeds a second output term, y + σ, so σ's own rule has a gradient to add."""
    from onnx import TensorProto, helper

    ins = ["s", "x"] if sigmoid_first else ["x", "s"]
    last = (
        helper.make_node("Add", ["m", "s"], ["y0"])
        if shared
        else helper.make_node("Identity", ["m"], ["y0"])
    )
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ins, ["m"]), last]
    graph = helper.make_graph(
        nodes,
        "silu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X.shape))],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, list(X.shape))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("target", ["portable", "onnxruntime"])
@pytest.mark.parametrize("shared", [False, True], ids=["silu", "sigmoid-shared"])
@pytest.mark.parametrize("sigmoid_first", [False, True], ids=["x-first", "sigmoid-first"])
def test_silu_takes_its_whole_derivative_in_one_rule(
    sigmoid_first: bool, shared: bool, target: str
) -> None:
    """Mul(x, Sigmoid(x)) gets SiLU's derivative σ + y·(1 - σ) at once; against torch's
    float64 autograd of x·σ(x) (+ σ(x)), on inputs spread to ±20 (σ's tails). On target
    onnxruntime 1 - σ is a HardSigmoid, on the portable one a Sub."""
    torch = pytest.importorskip("torch")
    model = _silu_graph(sigmoid_first, shared)
    explain = build_explain_model(model, "vanilla", target=target)
    ops = [n.op_type for n in explain.graph.node]
    assert "Exp" not in ops or shared  # SiLU alone reuses the forward's σ
    assert ("HardSigmoid" in ops) == (target == "onnxruntime"), ops
    x = (X * 7).astype(np.float32)
    # Its own draw, not the module's RNG: the draw then does not depend on which tests ran
    # before (onnxruntime's float32 σ tails leave ~1e-6 of the atol's 1e-6 on some draws).
    dy = np.random.default_rng(2).standard_normal(X.shape).astype(np.float32)
    (ours,) = session(explain).run(["saliency"], {"x": x, "output_grad": dy})
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.silu(t) + (torch.sigmoid(t) if shared else 0)
    (y * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    assert t.grad is not None
    np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-5, atol=1e-6)
