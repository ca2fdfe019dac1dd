"""Normalization rules against central finite differences: BatchNormalization (inference),
InstanceNormalization, LayerNormalization over any axis (and its Mean/InvStdDev outputs),
and LRN with odd and even window sizes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.utils
import pytest
from onnx import TensorProto, helper
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.errors import RewriteError

from helpers.fd import assert_vjp_matches, session, single_op_model


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bn_params(c: int) -> dict[str, np.ndarray]:
    rng = _rng(1)
    return {
        "scale": rng.standard_normal(c).astype(np.float32),
        "bias": rng.standard_normal(c).astype(np.float32),
        "mean": rng.standard_normal(c).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, c).astype(np.float32),
    }


@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)])
@pytest.mark.parametrize("const_params", [True, False])
def test_batch_norm(spatial, const_params) -> None:
    x = _rng().standard_normal((2, 3, *spatial)).astype(np.float32)
    params = _bn_params(3)
    order = ["x", "scale", "bias", "mean", "var"]
    attrs = {"epsilon": 1e-3}
    if const_params:
        model = single_op_model("BatchNormalization", {"x": x}, attrs, params, order)
        feeds = {"x": x}
    else:
        model = single_op_model("BatchNormalization", {"x": x, **params}, attrs, None, order)
        feeds = {"x": x, **params}
    assert_vjp_matches(model, feeds, wrt="x")


def test_batch_norm_training_mode_is_refused() -> None:
    x = _rng().standard_normal((2, 3, 4, 4)).astype(np.float32)
    model = single_op_model(
        "BatchNormalization",
        {"x": x},
        {"training_mode": 1},
        _bn_params(3),
        ["x", "scale", "bias", "mean", "var"],
        n_outputs=3,
    )
    with pytest.raises(RewriteError, match="training mode"):
        build_explain_model(model, "vanilla", input_name="x", output_name="y0")


@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)])
@pytest.mark.parametrize("wrt", ["x", "scale", "bias"])
def test_instance_norm(spatial, wrt) -> None:
    rng = _rng()
    inputs = {
        "x": rng.standard_normal((2, 3, *spatial)).astype(np.float32),
        "scale": rng.standard_normal(3).astype(np.float32),
        "bias": rng.standard_normal(3).astype(np.float32),
    }
    # An epsilon of 0.1 keeps small groups (7 values) well conditioned for float32
    # differences: onnxruntime has no float64 InstanceNormalization.
    model = single_op_model("InstanceNormalization", inputs, {"epsilon": 0.1})
    assert_vjp_matches(model, inputs, wrt=wrt)


@pytest.mark.parametrize(
    ("opset", "spatial", "groups"),
    [(21, (5, 6), 2), (21, (7,), 3), (21, (3, 4, 2), 1), (18, (5, 6), 2), (18, (4,), 6)],
)
@pytest.mark.parametrize("wrt", ["x", "scale", "bias"])
def test_group_norm(opset, spatial, groups, wrt) -> None:
    # Opset 18 scales and shifts per group, opset 21 per channel.
    rng = _rng()
    affine = 6 if opset >= 21 else groups
    inputs = {
        "x": rng.standard_normal((2, 6, *spatial)).astype(np.float32),
        "scale": rng.standard_normal(affine).astype(np.float32),
        "bias": rng.standard_normal(affine).astype(np.float32),
    }
    attrs = {"num_groups": groups, "epsilon": 0.1}
    model = single_op_model("GroupNormalization", inputs, attrs, opset=opset)
    assert_vjp_matches(model, inputs, wrt=wrt)


def test_group_norm_matches_torch() -> None:
    """torch's GroupNorm (per-channel affine, as opset 21) in float64 as a second oracle."""
    torch = pytest.importorskip("torch")
    rng = _rng()
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    scale, bias = (
        rng.standard_normal(6).astype(np.float32),
        rng.standard_normal(6).astype(np.float32),
    )
    model = single_op_model(
        "GroupNormalization",
        {"x": x},
        {"num_groups": 3, "epsilon": 1e-5},
        {"scale": scale, "bias": bias},
        opset=21,
    )
    dy = rng.standard_normal(x.shape).astype(np.float32)
    (ours,) = session(build_explain_model(model, "vanilla")).run(
        ["saliency"], {"x": x, "output_grad": dy}
    )
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.group_norm(
        t, 3, torch.tensor(scale, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)
    )
    (y * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    assert t.grad is not None
    np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-4, atol=1e-5)


LAYER_NORM_CASES = [
    # (shape, axis)
    ((2, 3, 5), -1),
    ((2, 3, 5), 1),
    ((2, 3, 4, 5), 2),
    ((2, 3, 4, 5), 0),
    ((6, 8), -1),
]


@pytest.mark.parametrize(("shape", "axis"), LAYER_NORM_CASES)
@pytest.mark.parametrize("wrt", ["x", "scale", "bias"])
def test_layer_norm(shape, axis, wrt) -> None:
    rng = _rng()
    normalized = shape[axis % len(shape) :]
    inputs = {
        "x": rng.standard_normal(shape).astype(np.float32),
        "scale": rng.standard_normal(normalized).astype(np.float32),
        "bias": rng.standard_normal(normalized).astype(np.float32),
    }
    model = single_op_model("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-2})
    assert_vjp_matches(model, inputs, wrt=wrt)


def test_layer_norm_without_bias() -> None:
    rng = _rng()
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    scale = rng.standard_normal(5).astype(np.float32)
    model = single_op_model("LayerNormalization", {"x": x}, {"epsilon": 1e-2}, {"scale": scale})
    assert_vjp_matches(model, {"x": x}, wrt="x")


def _layer_norm_using_statistics() -> onnx.ModelProto:
    """z = Y + 2·Mean + 3·InvStdDev: gradients reach all three LayerNormalization outputs."""
    nodes = [
        helper.make_node(
            "LayerNormalization", ["x", "scale"], ["y", "mean", "inv_std"], axis=1, epsilon=0.1
        ),
        helper.make_node("Mul", ["mean", "two"], ["m2"]),
        helper.make_node("Mul", ["inv_std", "three"], ["s3"]),
        helper.make_node("Add", ["y", "m2"], ["t"]),
        helper.make_node("Add", ["t", "s3"], ["y0"]),
    ]
    rng = _rng(3)
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "scale"),
        onnx.numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        onnx.numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three"),
    ]
    graph = helper.make_graph(
        nodes,
        "ln_stats",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_layer_norm_mean_and_inv_std_outputs() -> None:
    x = _rng().standard_normal((2, 3, 4)).astype(np.float32)
    assert_vjp_matches(_layer_norm_using_statistics(), {"x": x}, wrt="x")


LRN_ATTRS = {"alpha": 0.5, "beta": 0.75, "bias": 1.5}


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn(size) -> None:
    # onnxruntime's LRN takes 4-D inputs and odd sizes only.
    x = _rng().standard_normal((2, 6, 4, 5)).astype(np.float32)
    model = single_op_model("LRN", {"x": x}, {"size": size, **LRN_ATTRS})
    assert_vjp_matches(model, {"x": x}, wrt="x")


def _backward_only(explain: onnx.ModelProto) -> onnx.ModelProto:
    """The explain model without its forward part, which onnxruntime may refuse to load."""
    return onnx.utils.Extractor(explain).extract_model(["x", "output_grad"], ["saliency"])


@pytest.mark.parametrize("size", [2, 4, 3])
@pytest.mark.parametrize("spatial", [(5,), (3, 4), (2, 3, 2)])
def test_lrn_against_torch(size, spatial) -> None:
    """Even sizes and ranks other than 4, which onnxruntime's LRN refuses, against torch.

    ONNX puts floor((size-1)/2) channels before c and ceil((size-1)/2) after it; torch
    puts the larger half before. Flipping the channel axis turns one into the other.
    """
    torch = pytest.importorskip("torch")
    rng = _rng()
    x = rng.standard_normal((2, 5, *spatial))
    dy = rng.standard_normal(x.shape)
    model = single_op_model("LRN", {"x": x.astype(np.float32)}, {"size": size, **LRN_ATTRS})
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    # onnxruntime has no float64 Conv: the backward runs in float32.
    backward = session(_backward_only(explain))
    feeds = {"x": x.astype(np.float32), "output_grad": dy.astype(np.float32)}
    saliency = backward.run(["saliency"], feeds)[0]
    xt = torch.tensor(x[:, ::-1].copy(), requires_grad=True)
    yt = torch.nn.functional.local_response_norm(
        xt, size, LRN_ATTRS["alpha"], LRN_ATTRS["beta"], LRN_ATTRS["bias"]
    )
    yt.backward(torch.tensor(dy[:, ::-1].copy()))
    expected = xt.grad.numpy()[:, ::-1]
    np.testing.assert_allclose(saliency, expected, rtol=1e-4, atol=1e-5)
