"""Conv rules against central finite differences, over strides, pads, dilations, groups."""

from __future__ import annotations

import numpy as np
import pytest

from fd import assert_vjp_matches, single_op_model

CASES = [
    # (spatial, kernel, attrs, constant weights?)
    ((9, 9), (3, 3), {"pads": [1, 1, 1, 1]}, True),
    ((9, 9), (3, 3), {"pads": [1, 1, 1, 1]}, False),
    ((9, 8), (3, 2), {"strides": [2, 2], "pads": [1, 0, 1, 1]}, True),
    ((10, 10), (3, 3), {"strides": [2, 3], "dilations": [2, 1]}, True),
    ((9, 9), (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    ((9, 9), (4, 4), {"auto_pad": "SAME_LOWER"}, True),
    ((9, 9), (3, 3), {"pads": [3, 0, 0, 3]}, True),  # pad > k-1: falls back to ConvTranspose
    ((11,), (3,), {"strides": [2]}, True),  # 1-D
    ((5, 6, 7), (3, 2, 3), {"pads": [1, 0, 1, 1, 1, 0]}, True),  # 3-D
]


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize(("spatial", "kernel", "attrs", "const_w"), CASES)
def test_conv_input_gradient(spatial, kernel, attrs, const_w, group) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, *spatial)).astype(np.float32)
    w = rng.standard_normal((6, 4 // group, *kernel)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    attrs = {**attrs, "group": group}
    if const_w:
        model = single_op_model("Conv", {"x": x}, attrs, {"w": w, "b": b})
        feeds = {"x": x}
    else:
        model = single_op_model("Conv", {"x": x, "w": w}, attrs, {"b": b})
        feeds = {"x": x, "w": w}
    assert_vjp_matches(model, feeds, wrt="x")


TRANSPOSE_CASES = [
    # (spatial, kernel, attrs)
    ((5, 5), (3, 3), {}),
    ((5, 4), (3, 2), {"strides": [2, 2], "pads": [1, 0, 1, 1]}),
    ((5, 5), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ((4, 5), (3, 3), {"strides": [3, 2], "dilations": [2, 1], "output_padding": [2, 0]}),
    ((4, 4), (3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((4, 4), (4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((4, 4), (3, 3), {"strides": [2, 2], "output_shape": [8, 7]}),
    ((4, 4), (3, 3), {"strides": [2, 2], "output_shape": [8, 7], "auto_pad": "SAME_UPPER"}),
    ((7,), (3,), {"strides": [2], "pads": [1, 0]}),  # 1-D
    ((3, 4, 3), (3, 2, 3), {"strides": [2, 1, 2], "pads": [1, 0, 1, 1, 1, 0]}),  # 3-D
]


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize(("spatial", "kernel", "attrs"), TRANSPOSE_CASES)
def test_conv_transpose_input_gradient(spatial, kernel, attrs, group) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, *spatial)).astype(np.float32)
    w = rng.standard_normal((4, 6 // group, *kernel)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    model = single_op_model("ConvTranspose", {"x": x}, {**attrs, "group": group}, {"w": w, "b": b})
    assert_vjp_matches(model, {"x": x}, wrt="x")


def test_conv_transpose_weight_and_bias_as_inputs() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    feeds = {"x": x, "w": w, "b": b}
    model = single_op_model("ConvTranspose", feeds, {"strides": [2, 2]})
    assert_vjp_matches(model, feeds, wrt="x")
    assert_vjp_matches(model, feeds, wrt="b")
