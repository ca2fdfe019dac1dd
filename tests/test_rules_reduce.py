"""Reduction rules against central finite differences (and torch.amax for ties).

Axes are given both ways: as an attribute (opset 17, all but ReduceSum) and as an input
(opset 18), with keepdims 0/1, all-axes defaults and noop_with_empty_axes.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches, dynamic_batch, session, single_op_model

RNG = np.random.default_rng(4)
X = np.asarray(RNG.standard_normal((2, 3, 4)), dtype=np.float32)

OPS = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceL2",
    "ReduceL1",
    "ReduceSumSquare",
    "ReduceLogSumExp",
]
AXES = [[1], [-1], [0, 2], None]


def reduce_model(
    op: str, axes: list[int] | None, keepdims: int, opset: int, x: np.ndarray = X
) -> onnx.ModelProto:
    """`op` over x; axes as an input where the opset asks for it, else an attribute."""
    attrs: dict = {"keepdims": keepdims}
    constants = {}
    if axes is not None:
        if op == "ReduceSum" or opset >= 18:
            constants["axes"] = np.asarray(axes, dtype=np.int64)
        else:
            attrs["axes"] = axes
    return single_op_model(op, {"x": x}, attrs, constants, opset=opset)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_reduce(op: str, axes: list[int] | None, keepdims: int, opset: int) -> None:
    model = reduce_model(op, axes, keepdims, opset)
    assert_vjp_matches(model, {"x": X}, wrt="x")


@pytest.mark.parametrize("op", OPS)
def test_noop_with_empty_axes(op: str) -> None:
    model = single_op_model(
        op,
        {"x": X},
        {"noop_with_empty_axes": 1},
        {"axes": np.zeros(0, np.int64)},
        opset=18,
    )
    assert_vjp_matches(model, {"x": X}, wrt="x")


@pytest.mark.parametrize("axes", [[0], [1], None], ids=str)
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax"])
def test_dynamic_batch(op: str, axes: list[int] | None) -> None:
    model = dynamic_batch(reduce_model(op, axes, 0, 18))
    assert_vjp_matches(model, {"x": X}, wrt="x")


@pytest.mark.parametrize(("op", "reduce"), [("ReduceMax", torch.amax), ("ReduceMin", torch.amin)])
def test_ties_split_evenly_like_torch(op: str, reduce) -> None:
    # Rounded values tie often; finite differences are meaningless there, torch is not.
    x = np.round(RNG.standard_normal((3, 6)) * 1.5).astype(np.float32)
    u = RNG.standard_normal(3).astype(np.float32)
    model = reduce_model(op, [1], 0, 18, x)
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    got = session(explain).run(["saliency"], {"x": x, "output_grad": u})[0]
    xt = torch.tensor(x, requires_grad=True)
    reduce(xt, dim=1).backward(torch.tensor(u))
    assert xt.grad is not None
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert (np.count_nonzero(got, axis=1) > 1).any(), "the input should contain ties"
