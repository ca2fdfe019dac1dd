"""Activation rules against central finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from fd import assert_vjp_matches, single_op_model

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
