"""Folding BatchNormalization and per-channel affines into the conv before them.

The oracle is PyTorch: the same layers (Conv2d, BatchNorm2d in eval mode, ConvTranspose2d,
Linear, BatchNorm1d) with the same weights, differentiated by autograd in float64.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxplain.graph_rewrite import build_explain_model, default_output

from helpers import lightzoo
from helpers.fd import assert_vjp_matches, session, with_first_output
from helpers.oracle import Oracle, TorchReference

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 10, 10)).astype(np.float32)


def _f32(*shape: int, scale: float = 0.5) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _bn_params(prefix: str, c: int) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_s": RNG.uniform(0.5, 1.5, c).astype(np.float32),
        f"{prefix}_b": _f32(c, scale=0.2),
        f"{prefix}_m": _f32(c, scale=0.3),
        f"{prefix}_v": RNG.uniform(0.2, 2.0, c).astype(np.float32),
    }


def _bn(prefix: str, x: str, y: str) -> onnx.NodeProto:
    ins = [x, *(f"{prefix}_{k}" for k in "sbmv")]
    return helper.make_node("BatchNormalization", ins, [y], name=prefix, epsilon=1e-3)


def _model(
    nodes: list[onnx.NodeProto],
    weights: dict[str, np.ndarray],
    outputs: list[str],
    opset: int = 17,
    in_shape: list[int | str] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "folding",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape or ["N", 3, 10, 10])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


# ---------------------------------------------------------------- exact against PyTorch


def _every_foldable_layer() -> tuple[onnx.ModelProto, torch.nn.Module]:
    """Conv+BN, Conv+Mul+Add, grouped ConvTranspose+BN, Gemm(alpha, beta)+BN: ONNX and torch."""
    w = {
        "w1": _f32(8, 3, 3, 3),
        "b1": _f32(8),
        "w2": _f32(6, 8, 3, 3),
        "mul": RNG.uniform(0.5, 2.0, (6, 1, 1)).astype(np.float32),
        "add": _f32(1, 6, 1, 1),
        "wt": _f32(6, 2, 2, 2),  # ConvTranspose, groups=2: 6 in, 4 out
        "fc": _f32(5, 4),
        "fc_b": _f32(5),
        **_bn_params("bn1", 8),
        **_bn_params("bn2", 4),
        **_bn_params("bn3", 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4),
        _bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Mul", ["mul", "c2"], ["m2"]),
        helper.make_node("Add", ["m2", "add"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("ConvTranspose", ["r2", "wt"], ["t3"], strides=[2, 2], group=2),
        _bn("bn2", "t3", "n3"),
        helper.make_node("Relu", ["n3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["g"], transB=1, alpha=0.5, beta=2.0),
        _bn("bn3", "g", "y"),
    ]
    model = _model(nodes, w, ["y"])

    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}

    def bn(prefix: str, n: int) -> torch.nn.Module:
        layer = (torch.nn.BatchNorm2d if n == 2 else torch.nn.BatchNorm1d)(len(t[f"{prefix}_s"]))
        layer.eps = 1e-3
        layer.weight.data, layer.bias.data = t[f"{prefix}_s"], t[f"{prefix}_b"]
        layer.running_mean.data, layer.running_var.data = t[f"{prefix}_m"], t[f"{prefix}_v"]
        return layer

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn1, self.bn2, self.bn3 = bn("bn1", 2), bn("bn2", 2), bn("bn3", 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            fn = torch.nn.functional
            r1 = fn.relu(self.bn1(fn.conv2d(x, t["w1"], t["b1"], padding=1)))
            r2 = fn.relu(fn.conv2d(r1, t["w2"], stride=2, padding=1) * t["mul"] + t["add"])
            r3 = fn.relu(self.bn2(fn.conv_transpose2d(r2, t["wt"], stride=2, groups=2)))
            flat = r3.mean(dim=(2, 3))
            return self.bn3(0.5 * flat @ t["fc"].T + 2.0 * t["fc_b"])

    return model, Net().double().eval()


def test_folded_layers_give_the_original_outputs_and_the_autograd_gradient() -> None:
    model, net = _every_foldable_layer()
    explain = build_explain_model(model, "vanilla")
    # Every BatchNormalization, Mul and Add went into the layer before it.
    forward_ops = _ops(explain)
    assert forward_ops["BatchNormalization"] == 0
    assert not any(n.op_type in ("Mul", "Add") and "m2" in n.output for n in explain.graph.node)

    seed = RNG.standard_normal((2, 5)).astype(np.float32)
    y, saliency = session(explain).run(None, {"x": X, "output_grad": seed})
    (expected,) = session(model).run(None, {"x": X})
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)

    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    out = net(x)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    (out * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    reference = x.grad.numpy()  # type: ignore[union-attr]
    rel = np.linalg.norm(saliency - reference) / np.linalg.norm(reference)
    assert rel < 1e-5, rel


def test_weights_in_constant_nodes_fold_too() -> None:
    # Paddle exports hold weights in Constant nodes rather than initializers.
    weights = {"w": _f32(4, 3, 3, 3), **_bn_params("bn", 4)}
    nodes = [
        helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k))
        for k, v in weights.items()
    ]
    nodes += [helper.make_node("Conv", ["x", "w"], ["c"]), _bn("bn", "c", "y")]
    model = _model(nodes, {}, ["y"])
    explain = build_explain_model(model, "vanilla")
    assert _ops(explain)["BatchNormalization"] == 0
    assert _ops(explain)["Constant"] == 0  # the spent ones are gone
    (expected,) = session(model).run(None, {"x": X})
    y = session(explain).run(["y"], {"x": X, "output_grad": np.ones_like(expected)})[0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


AFFINES = [
    ("Mul", False, (4, 1, 1)),
    ("Mul", True, ()),
    ("Add", True, (1, 4, 1, 1)),
    ("Sub", False, (4, 1, 1)),
    ("Sub", True, (4, 1, 1)),  # c - x: a negative scale
    ("Div", False, (1, 4, 1, 1)),
]


@pytest.mark.parametrize(("op", "const_first", "shape"), AFFINES)
def test_each_per_channel_affine_folds_exactly(
    op: str, const_first: bool, shape: tuple[int, ...]
) -> None:
    c = RNG.uniform(0.5, 2.0, shape).astype(np.float32)
    operands = ["c", "conv"] if const_first else ["conv", "c"]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"]),
        helper.make_node(op, operands, ["y"]),
    ]
    model = _model(nodes, {"w": _f32(4, 3, 3, 3), "b": _f32(4), "c": c}, ["y"])
    explain = build_explain_model(model, "vanilla")
    assert _ops(explain)[op] == 0
    (expected,) = session(model).run(None, {"x": X})
    y = session(explain).run(["y"], {"x": X, "output_grad": np.ones_like(expected)})[0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert_vjp_matches(model, {"x": X}, wrt="x", output="y")


# ---------------------------------------------------------------- left alone where unsafe


def _conv_bn_tanh(
    extra_nodes: Sequence[onnx.NodeProto] = (), outputs: Sequence[str] = ()
) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
        _bn("bn", "c", "n"),
        helper.make_node("Tanh", ["n"], ["y"]),  # smooth: float32 differences see it
        *extra_nodes,
    ]
    weights = {"w": _f32(4, 3, 3, 3), "b": _f32(4), **_bn_params("bn", 4)}
    return _model(nodes, weights, ["y", *outputs])


@pytest.mark.parametrize(
    ("case", "model", "kwargs"),
    [
        (
            "conv output read twice",
            _conv_bn_tanh([helper.make_node("Sigmoid", ["c"], ["s"])], ["s"]),
            {},
        ),
        ("conv output is a graph output", _conv_bn_tanh(outputs=["c"]), {}),
        ("conv output is the explained output", _conv_bn_tanh(), {"output_name": "c"}),
        ("conv output is the explained input", _conv_bn_tanh(), {"input_name": "c"}),
    ],
)
def test_fold_is_skipped_where_the_conv_output_is_needed(
    case: str, model: onnx.ModelProto, kwargs: dict[str, str]
) -> None:
    explain = build_explain_model(model, "vanilla", **kwargs)
    assert _ops(explain)["BatchNormalization"] == 1, case
    (expected,) = session(model).run(["y"], {"x": X})
    seed = np.ones((2, 4, 10, 10), np.float32)
    y = session(explain).run(["y"], {"x": X, "output_grad": seed})[0]
    np.testing.assert_array_equal(y, expected)
    if "input_name" not in kwargs:
        assert_vjp_matches(model, {"x": X}, wrt="x", output=kwargs.get("output_name", "y"))


def test_an_intermediate_explained_input_keeps_its_batchnorm_gradient() -> None:
    model = _conv_bn_tanh()
    explain = build_explain_model(model, "vanilla", input_name="c")
    seed = RNG.standard_normal((2, 4, 10, 10)).astype(np.float32)
    (saliency,) = session(explain).run(["saliency"], {"x": X, "output_grad": seed})
    c = session(with_first_output(model, "c")).run(None, {"x": X})[0]
    w = {
        t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64)
        for t in model.graph.initializer
    }
    ct = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    n = torch.nn.functional.batch_norm(ct, w["bn_m"], w["bn_v"], w["bn_s"], w["bn_b"], eps=1e-3)
    (torch.tanh(n) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(saliency, ct.grad.numpy(), rtol=1e-5, atol=1e-6)  # type: ignore[union-attr]


def test_fold_is_skipped_where_weights_are_overridable_or_the_affine_is_not_per_channel() -> None:
    # IR 4+ lists a weight as an input only when the caller may override it.
    model = _conv_bn_tanh()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]))
    explain = build_explain_model(model, "vanilla")
    assert _ops(explain)["BatchNormalization"] == 1
    assert "w" in [i.name for i in explain.graph.input]
    # A constant that varies along the width is not a per-channel affine.
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["c", "c_w"], ["y"]),
    ]
    weights = {"w": _f32(4, 3, 3, 3), "c_w": _f32(1, 1, 1, 8)}
    explain = build_explain_model(_model(nodes, weights, ["y"]), "vanilla")
    assert _ops(explain)["Mul"] >= 1 and any(n.input[1] == "c_w" for n in explain.graph.node)


def test_ir3_weights_listed_as_inputs_become_constants_and_fold() -> None:
    model = _conv_bn_tanh()
    model.ir_version = 3
    model.opset_import[0].version = 9
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    explain = build_explain_model(model, "vanilla")
    assert [i.name for i in explain.graph.input] == ["x", "output_grad"]
    assert _ops(explain)["BatchNormalization"] == 0
    (expected,) = session(model).run(None, {"x": X})
    y = session(explain).run(["y"], {"x": X, "output_grad": np.ones_like(expected)})[0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the light zoo's ResNet-50


def test_caffe2_resnet50_loses_every_batchnorm_and_keeps_its_outputs() -> None:
    # IR 3, every weight also a graph input, 53 Conv→BatchNormalization pairs (~30 s).
    model = lightzoo.load("resnet50")
    assert _ops(model)["BatchNormalization"] == 53
    name, image = lightzoo.image_for(model)
    seed = np.zeros((1, 1000), np.float32)
    seed[0, 3] = 1
    explain = build_explain_model(model, "vanilla")
    assert _ops(explain)["BatchNormalization"] == 0
    assert [i.name for i in explain.graph.input] == [name, "output_grad"]
    probs, saliency = session(explain).run(None, {name: image, "output_grad": seed})
    (expected,) = session(model).run(None, {name: image})
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-7)
    # Against onnx2torch's float64 autograd, within what float32 rounding alone does to
    # this map (ReLU masks flip in a deep net), as the whole-model tests judge.
    reference = TorchReference(model, name, default_output(model), image)
    _, _, verdict = Oracle(reference, image, seed).judge("vanilla", saliency, 4.0, 1e-5)
    assert not verdict, verdict
