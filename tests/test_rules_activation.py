"""Activation rules against central finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.graph_rewrite import build_explain_model

from fd import assert_vjp_matches, session, single_op_model

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
]


@pytest.mark.parametrize(
    ("op", "attrs", "consts"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_activation_matches_finite_differences(op: str, attrs: dict, consts: dict) -> None:
    model = single_op_model(op, {"x": X}, attrs, consts)
    assert_vjp_matches(model, {"x": X}, wrt="x")


@pytest.mark.parametrize("op", ["Relu", "LeakyRelu", "PRelu"])
def test_float32_positive_mask_is_exact(op: str) -> None:
    """The onnxruntime target's float32 mask (a HardSigmoid) is exactly [x > 0] from 2^-127."""
    tiny = np.finfo(np.float32).tiny  # 2^-126
    # 2^-127 is subnormal: the smallest positive float the mask still counts as positive.
    values = [0.0, -0.0, 2.0**-127, tiny, 1e-30, 1e-7, 1.0, 3e38, np.inf, -tiny, -1.0, -np.inf]
    x = np.array(values, np.float32).reshape(1, 1, 1, -1)
    consts = {"slope": np.zeros((1, 1, 1), np.float32)} if op == "PRelu" else {}
    attrs = {"alpha": 0.0} if op == "LeakyRelu" else {}  # slope 0 below: the mask alone
    model = single_op_model(op, {"x": x}, attrs, consts)
    explain = build_explain_model(model, "vanilla", target="onnxruntime")
    assert "HardSigmoid" in {n.op_type for n in explain.graph.node}
    (saliency,) = session(explain).run(["saliency"], {"x": x, "output_grad": np.ones_like(x)})
    np.testing.assert_array_equal(saliency, (x > 0).astype(np.float32))
