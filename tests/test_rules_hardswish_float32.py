"""HardSwish's float32 slope (two HardSigmoid steps and a ramp) against torch's float64
autograd, on every piece and at the edges of the pieces, and across runtimes.

The FD tests in test_rules_activation.py run in float64, which takes the comparison form;
these run the float32 graph itself, at points where a step off by one ulp would show.

At x = 3 exactly the slope is the ramp's 1.5, the comparison form's value, where torch says
1: the side that owns the kink decides whether runtimes agree on a forward value that lands
on it (rectifiers.py, _THREE_UP). Everywhere else torch's float64 autograd is the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnxplain.graph_rewrite import build_explain_model

from helpers import runtimes
from helpers.fd import session, single_op_model


def _points() -> np.ndarray:
    edges = [np.float32(t) for t in (-3.0, 3.0)]
    near = [np.nextafter(t, np.float32(d)) for t in edges for d in (-np.inf, np.inf)]
    far = [-1e30, -7.0, -3.5, -1.5, -1e-30, 0.0, 1e-30, 0.5, 2.9, 3.5, 7.0, 1e30, 3e38]
    rest = np.random.default_rng(0).uniform(-6.0, 6.0, 64 - len(near) - len(far) - 2)
    # ±3 themselves: torch's slope is 0 at -3 (ours too) and 1 at 3 (ours 1.5, see above).
    return np.array([*near, *far, 3.0, -3.0, *rest], np.float32).reshape(1, 4, 4, 4)


X = _points()


def _torch_slope(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """torch's float64 gradient, but the ramp's left limit 1.5·dy at x = 3 exactly."""
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.hardswish(t).backward(torch.tensor(dy, dtype=torch.float64))
    return np.where(x == 3.0, 1.5 * dy.astype(np.float64), t.grad.numpy())


def _explain():
    return build_explain_model(single_op_model("HardSwish", {"x": X}), "vanilla")


def test_float32_hardswish_slope_matches_torch() -> None:
    explain = _explain()
    ops = [n.op_type for n in explain.graph.node]
    assert "Greater" not in ops and ops.count("HardSigmoid") == 2  # the fused form
    dy = np.random.default_rng(1).standard_normal(X.shape).astype(np.float32)
    (ours,) = session(explain).run(["saliency"], {"x": X, "output_grad": dy})
    theirs = _torch_slope(X, dy)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("runtime", runtimes.others())
def test_float32_hardswish_slope_across_runtimes(runtime) -> None:
    explain = _explain()
    dy = np.ones(X.shape, np.float32)
    (theirs,) = runtimes.load(runtime, explain)({"x": X, "output_grad": dy}, ["saliency"])
    np.testing.assert_allclose(theirs, _torch_slope(X, dy), rtol=1e-6, atol=1e-6)
