"""Elementwise rules against central finite differences, broadcasting and dynamic batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches, dynamic_batch, session, single_op_model

RNG = np.random.default_rng(2)


def normal(*shape: int) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), dtype=np.float32)


def positive(*shape: int) -> np.ndarray:
    return np.asarray(RNG.uniform(0.5, 2.0, shape), dtype=np.float32)


BINARY = [
    ("Add", normal(2, 3, 4), normal(3, 1)),
    ("Add", normal(2, 3, 4), normal(2, 3, 4)),
    ("Sub", normal(4), normal(2, 3, 4)),
    ("Sub", normal(2, 1, 4), normal(3, 1)),
    ("Mul", normal(2, 1, 4), normal(3, 1)),
    ("Mul", normal(1), normal(2, 3)),
    ("Div", normal(2, 3, 4), positive(4)),
    ("Div", normal(3, 1), positive(2, 1, 4)),
    ("Pow", positive(2, 3, 4), normal(3, 1)),
    ("Pow", positive(1, 4), normal(2, 3, 1)),
]


@pytest.mark.parametrize("wrt", ["a", "b"])
@pytest.mark.parametrize(
    ("op", "a", "b"), BINARY, ids=[f"{c[0]}-{i}" for i, c in enumerate(BINARY)]
)
def test_binary(op: str, a: np.ndarray, b: np.ndarray, wrt: str) -> None:
    model = single_op_model(op, {"a": a, "b": b})
    assert_vjp_matches(model, {"a": a, "b": b}, wrt=wrt)


@pytest.mark.parametrize(
    "exponent",
    [np.float32(2.0), np.float32(3.0), np.float32(0.5), positive(4), np.int64(3)],
    ids=["square", "cube", "sqrt", "tensor", "int"],
)
def test_pow_constant_exponent(exponent: np.ndarray) -> None:
    x = positive(2, 3, 4)
    model = single_op_model("Pow", {"x": x}, constants={"e": np.asarray(exponent)})
    assert_vjp_matches(model, {"x": x}, wrt="x")


UNARY = [
    ("Sqrt", positive(2, 3, 4), {}, 17),
    ("Neg", normal(2, 3, 4), {}, 17),
    ("Abs", normal(2, 3, 4), {}, 17),
    ("Exp", normal(2, 3, 4), {}, 17),
    ("Log", positive(2, 3, 4), {}, 17),
    ("Reciprocal", positive(2, 3, 4), {}, 17),
    ("Identity", normal(2, 3, 4), {}, 17),
    ("Softplus", normal(2, 3, 4), {}, 17),
    ("Elu", normal(2, 3, 4), {"alpha": 0.7}, 17),
    ("Cast", normal(2, 3, 4), {"to": onnx.TensorProto.DOUBLE}, 17),
    ("Gelu", normal(2, 3, 4), {}, 20),
    ("Gelu", normal(2, 3, 4), {"approximate": "tanh"}, 20),
    ("Mish", 3 * normal(2, 3, 4), {}, 18),
    ("Sin", 3 * normal(2, 3, 4), {}, 17),
    ("Cos", 3 * normal(2, 3, 4), {}, 17),
]


@pytest.mark.parametrize(
    ("op", "x", "attrs", "opset"), UNARY, ids=[f"{c[0]}-{i}" for i, c in enumerate(UNARY)]
)
def test_unary(op: str, x: np.ndarray, attrs: dict, opset: int) -> None:
    model = single_op_model(op, {"x": x}, attrs, opset=opset)
    assert_vjp_matches(model, {"x": x}, wrt="x")


def test_mish_slope_stays_finite_in_both_tails() -> None:
    """torch's own Mish backward is the oracle where finite differences lose precision."""
    torch = pytest.importorskip("torch")
    x = np.asarray([[-100.0, -30.0, -5.0, 0.0, 5.0, 30.0, 100.0]], np.float32)
    model = single_op_model("Mish", {"x": x}, opset=18)
    explain = build_explain_model(model, "vanilla")
    dy = np.ones_like(x)
    (dx,) = session(explain).run(["saliency"], {"x": x, "output_grad": dy})
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.mish(t).sum().backward()
    assert t.grad is not None
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_dropout_inference_mode_with_mask_output() -> None:
    x = normal(2, 3, 4)
    model = single_op_model("Dropout", {"x": x}, constants={"ratio": np.float32(0.3)}, n_outputs=2)
    assert_vjp_matches(model, {"x": x}, wrt="x")


NARY = [
    ("Sum", [normal(2, 3, 4), normal(3, 1), normal(4)]),
    ("Mean", [normal(2, 3, 4), normal(3, 1), normal(1, 1, 4)]),
    ("Max", [normal(2, 3, 4), normal(3, 1), normal(4)]),
    ("Min", [normal(2, 3, 4), normal(2, 3, 4), normal(1, 3, 1)]),
    ("Max", [normal(2, 3)]),
]


@pytest.mark.parametrize(("op", "xs"), NARY, ids=[f"{c[0]}-{i}" for i, c in enumerate(NARY)])
def test_nary(op: str, xs: list[np.ndarray]) -> None:
    feeds = {f"x{i}": x for i, x in enumerate(xs)}
    model = single_op_model(op, feeds)
    for name in feeds:
        assert_vjp_matches(model, feeds, wrt=name)


def test_max_splits_ties_evenly() -> None:
    # The same tensor twice: each input gets half of the gradient, which sums to dy.
    x = normal(3, 4)
    model = single_op_model("Max", {"x": x}, input_order=["x", "x"])
    assert_vjp_matches(model, {"x": x}, wrt="x")


@pytest.mark.parametrize("wrt", ["x", "y"])
def test_where(wrt: str) -> None:
    x, y = normal(2, 3, 4), normal(3, 1)
    cond = RNG.random((1, 3, 4)) > 0.5
    model = single_op_model(
        "Where", {"x": x, "y": y}, constants={"c": cond}, input_order=["c", "x", "y"]
    )
    assert_vjp_matches(model, {"x": x, "y": y}, wrt=wrt)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub"])
@pytest.mark.parametrize("wrt", ["a", "b"])
def test_dynamic_batch(op: str, wrt: str) -> None:
    a, b = normal(2, 3, 4), positive(3, 1)
    model = dynamic_batch(single_op_model(op, {"a": a, "b": b}), {"a"})
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert_vjp_matches(model, {"a": a, "b": b}, wrt=wrt)
