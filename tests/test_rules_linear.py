"""Gemm and MatMul rules against central finite differences.

Each case runs with the other operand as a graph input (general path) and as an
initializer (MatMul's folded-constant path), for the gradient of every float operand.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.errors import RewriteError

from helpers import runtimes
from helpers.fd import assert_vjp_matches, dynamic_batch, session, single_op_model

RNG = np.random.default_rng(3)


def normal(*shape: int) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), dtype=np.float32)


def model_with(
    op: str, values: dict, const: set[str], attrs: dict | None = None
) -> tuple[onnx.ModelProto, dict]:
    """`op` over `values` in their order, those named in `const` as initializers."""
    inputs = {k: v for k, v in values.items() if k not in const}
    constants = {k: v for k, v in values.items() if k in const}
    model = single_op_model(op, inputs, attrs, constants, input_order=list(values))
    return model, inputs


GEMM = [
    # (A shape, B shape, C shape or None, attrs)
    ((3, 4), (4, 5), (5,), {}),
    ((4, 3), (4, 5), (3, 1), {"transA": 1, "alpha": 0.7}),
    ((3, 4), (5, 4), (1, 5), {"transB": 1, "beta": 1.5}),
    ((4, 3), (5, 4), (3, 5), {"transA": 1, "transB": 1, "alpha": 2.0, "beta": 0.5}),
    ((3, 4), (5, 4), None, {"transB": 1}),
]


@pytest.mark.parametrize("const", [set(), {"b"}, {"a"}], ids=["inputs", "const_b", "const_a"])
@pytest.mark.parametrize(("sa", "sb", "sc", "attrs"), GEMM)
def test_gemm(sa, sb, sc, attrs, const: set[str]) -> None:
    values = {"a": normal(*sa), "b": normal(*sb)}
    if sc is not None:
        values["c"] = normal(*sc)
    model, feeds = model_with("Gemm", values, const, attrs)
    for wrt in feeds:
        assert_vjp_matches(model, feeds, wrt=wrt)


def test_gemm_dynamic_batch() -> None:
    x, w, b = normal(3, 4), normal(5, 4), normal(5)
    model = single_op_model("Gemm", {"x": x}, {"transB": 1}, {"w": w, "b": b})
    assert_vjp_matches(dynamic_batch(model, {"x"}), {"x": x}, wrt="x")


MATMUL = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (3, 4, 5)),
    ((4,), (2, 4, 5)),
    ((2, 3, 4), (4,)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((1, 3, 4), (2, 4, 1)),
]


@pytest.mark.parametrize("const", [set(), {"b"}, {"a"}], ids=["inputs", "const_b", "const_a"])
@pytest.mark.parametrize(("sa", "sb"), MATMUL)
def test_matmul(sa, sb, const: set[str]) -> None:
    model, feeds = model_with("MatMul", {"a": normal(*sa), "b": normal(*sb)}, const)
    for wrt in feeds:
        assert_vjp_matches(model, feeds, wrt=wrt)


@pytest.mark.parametrize("const_w", [True, False])
def test_matmul_dynamic_batch(const_w: bool) -> None:
    x, w = normal(2, 3, 4), normal(4, 5)
    if const_w:
        model, feeds = single_op_model("MatMul", {"x": x}, constants={"w": w}), {"x": x}
    else:
        model, feeds = single_op_model("MatMul", {"x": x, "w": w}), {"x": x, "w": w}
    model = dynamic_batch(model, {"x"})
    for wrt in feeds:
        assert_vjp_matches(model, feeds, wrt=wrt)


def test_constant_weight_needs_no_transpose_node() -> None:
    x, w = normal(2, 4), normal(4, 5)
    model = single_op_model("MatMul", {"x": x}, constants={"w": w})
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    ops = [n.op_type for n in explain.graph.node]
    assert "Transpose" not in ops
    assert ops.count("MatMul") == 2


def test_gemm_backward_shares_the_forward_weight_on_the_onnxruntime_target_only() -> None:
    x, w = normal(2, 4), normal(5, 4)
    model = single_op_model("Gemm", {"x": x}, {"transB": 1, "alpha": 0.5}, constants={"w": w})
    for target, weights in (("onnxruntime", 1), ("portable", 2)):
        explain = build_explain_model(
            model, "vanilla", input_name="x", output_name="y0", target=target
        )
        # onnxruntime: the forward weight alone; portable: a copy for the backward Gemm,
        # which OpenVINO computes wrong when it shares the forward Gemm's initializer.
        assert len(explain.graph.initializer) == weights
        assert [n.op_type for n in explain.graph.node].count("Gemm") == 2


def test_matmul_of_two_vectors() -> None:
    # The result is a scalar; fd cannot seed 0-d outputs, so compare with the closed form.
    from onnxplain.graph_rewrite import build_explain_model

    a, b, u = normal(4), normal(4), np.asarray(1.7, np.float32)
    model = single_op_model("MatMul", {"a": a, "b": b})
    for wrt, other in (("a", b), ("b", a)):
        explain = build_explain_model(model, "vanilla", input_name=wrt, output_name="y0")
        got = session(explain).run(["saliency"], {"a": a, "b": b, "output_grad": u})[0]
        np.testing.assert_allclose(got, u * other, rtol=1e-6)


EINSUM_CASES = [
    # (equation, operand shapes)
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),  # attention scores
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ("bij,bjk", [(2, 3, 4), (2, 4, 5)]),  # implicit output: bik
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ijk->i", [(3, 4, 5)]),  # j and k summed over the only operand: spread back
    ("ij,k->ijk", [(3, 4), (5,)]),  # an outer product
    ("bchw,c->bhw", [(2, 3, 4, 5), (3,)]),
]


@pytest.mark.parametrize(("equation", "shapes"), EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_matches_finite_differences(equation: str, shapes: list[tuple[int, ...]]) -> None:
    rng = np.random.default_rng(7)
    names = [f"x{i}" for i in range(len(shapes))]
    inputs = {n: rng.standard_normal(s).astype(np.float32) for n, s in zip(names, shapes)}
    model = single_op_model("Einsum", inputs, {"equation": equation}, opset=12)
    for wrt in names:
        assert_vjp_matches(model, inputs, wrt=wrt)


@pytest.mark.parametrize(
    ("equation", "shapes", "refused"),
    [
        ("ii->i", [(3, 3)], "repeats an axis"),
        ("...ij,...jk->...ik", [(1, 3, 4), (2, 4, 5)], "may broadcast"),
    ],
)
def test_einsum_refusals_say_why(equation: str, shapes: list, refused: str) -> None:
    rng = np.random.default_rng(7)
    inputs = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    model = single_op_model("Einsum", inputs, {"equation": equation}, opset=12)
    with pytest.raises(RewriteError, match=refused):
        build_explain_model(model, "vanilla", input_name="x0")


@pytest.mark.parametrize("runtime", runtimes.others())
def test_einsum_agrees_across_runtimes(runtime: str) -> None:
    rng = np.random.default_rng(8)
    inputs = {
        "q": rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
        "k": rng.standard_normal((2, 3, 6, 5)).astype(np.float32),
    }
    model = single_op_model("Einsum", inputs, {"equation": "bhqd,bhkd->bhqk"}, opset=12)
    explain = build_explain_model(model, "vanilla", input_name="q")
    feeds = {**inputs, "output_grad": rng.standard_normal((2, 3, 4, 6)).astype(np.float32)}
    (reference,) = runtimes.load(runtimes.REFERENCE, explain)(feeds, ["saliency"])
    (other,) = runtimes.load(runtime, explain)(feeds, ["saliency"])
    assert np.linalg.norm(other - reference) <= 1e-5 * np.linalg.norm(reference)
