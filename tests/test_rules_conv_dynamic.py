"""Conv and ConvTranspose on inputs whose height and width are known only at run time:
SAME padding (which depends on the length at a stride above 1) and output_shape. One
explain model per case, checked against central differences at two sizes of different
parity."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches_at_sizes, dynamic_dims, single_op_model

CONV_CASES = [
    # (spatial, kernel, attrs)
    ((9, 9), (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((9, 8), (4, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((8, 9), (2, 2), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((9, 9), (4, 4), {"auto_pad": "SAME_LOWER"}),  # stride 1: pads static
    ((9, 8), (3, 2), {"strides": [2, 2], "pads": [1, 0, 1, 1]}),  # explicit pads
    ((11,), (3,), {"auto_pad": "SAME_UPPER", "strides": [2]}),  # 1-D
    ((5, 6, 7), (3, 2, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 1, 2]}),  # 3-D
]


def _x(spatial: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 4, *spatial)).astype(np.float32)


def _check(model, spatial: tuple[int, ...]):
    bigger = tuple(d + 1 for d in spatial)
    feeds = [{"x": _x(spatial)}, {"x": _x(bigger, seed=1)}]
    return assert_vjp_matches_at_sizes(model, feeds, wrt="x")


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize(("spatial", "kernel", "attrs"), CONV_CASES)
def test_conv(spatial, kernel, attrs, group) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4 // group, *kernel)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    model = single_op_model("Conv", {"x": _x(spatial)}, {**attrs, "group": group}, {"w": w, "b": b})
    _check(dynamic_dims(model), spatial)


def test_same_at_stride_one_keeps_the_flipped_conv() -> None:
    """At stride 1 SAME pads are d·(k-1) in all, whatever the length: the fast adjoint Conv."""
    w = np.random.default_rng(0).standard_normal((6, 4, 3, 3)).astype(np.float32)
    model = single_op_model("Conv", {"x": _x((8, 8))}, {"auto_pad": "SAME_UPPER"}, {"w": w})
    ops = [n.op_type for n in build_explain_model(dynamic_dims(model), "vanilla").graph.node]
    assert ops.count("Conv") == 2 and "ConvTranspose" not in ops and "Shape" not in ops


TRANSPOSE_CASES = [
    # (spatial, kernel, attrs)
    ((4, 4), (3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((4, 5), (4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((4, 4), (3, 3), {"strides": [2, 3], "auto_pad": "SAME_UPPER", "output_padding": [1, 0]}),
    ((4, 4), (3, 3), {"strides": [2, 2], "output_shape": [8, 7]}),
    ((4, 4), (3, 3), {"strides": [2, 2], "output_shape": [8, 7], "auto_pad": "SAME_UPPER"}),
    ((5, 4), (2, 2), {"strides": [2, 2]}),  # PP-OCRv4 det's upsampling
]


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize(("spatial", "kernel", "attrs"), TRANSPOSE_CASES)
def test_conv_transpose(spatial, kernel, attrs, group) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6 // group, *kernel)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    attrs = {**attrs, "group": group}
    model = single_op_model("ConvTranspose", {"x": _x(spatial)}, attrs, {"w": w, "b": b})
    _check(dynamic_dims(model), spatial)
