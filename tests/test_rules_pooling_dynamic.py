"""Average pooling on inputs whose height and width (and channels) are known only at run
time: one explain model per case, checked against central differences at two sizes of
different parity (ceil_mode and SAME padding change with it)."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches_at_sizes, dynamic_dims, single_op_model

AVERAGE_POOL_CASES = [
    # (spatial, attrs); each case also runs at spatial + 1 on every axis
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ((10, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((8, 7), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    ((7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((8, 7), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}),  # stride 1: pads static
    ((6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((6, 8), {"kernel_shape": [3, 2], "strides": [3, 2]}),  # PP-OCRv4 rec's pool
    ((11,), {"kernel_shape": [3], "strides": [2], "pads": [1, 2]}),  # 1-D
    ((5, 6, 7), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 2], "ceil_mode": 1}),  # 3-D
]


def _x(spatial: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, *spatial)).astype(np.float32)


def _check(model, spatial: tuple[int, ...]):
    bigger = tuple(d + 1 for d in spatial)
    feeds = [{"x": _x(spatial)}, {"x": _x(bigger, seed=1)}]
    return assert_vjp_matches_at_sizes(model, feeds, wrt="x")


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize(("spatial", "attrs"), AVERAGE_POOL_CASES)
def test_average_pool(spatial, attrs, count_include_pad) -> None:
    attrs = {**attrs, "count_include_pad": count_include_pad}
    model = dynamic_dims(single_op_model("AveragePool", {"x": _x(spatial)}, attrs))
    explain = _check(model, spatial)
    # Channels are known: one depthwise kernel, no reshape to single-channel planes.
    assert "Reshape" not in {n.op_type for n in explain.graph.node}


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize(("spatial", "attrs"), [AVERAGE_POOL_CASES[i] for i in (3, 5, 10)])
def test_average_pool_dynamic_channels(spatial, attrs, count_include_pad) -> None:
    attrs = {**attrs, "count_include_pad": count_include_pad}
    model = single_op_model("AveragePool", {"x": _x(spatial)}, attrs)
    _check(dynamic_dims(model, axes=(0, 1, 2, 3, 4)), spatial)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_dilated(count_include_pad) -> None:
    # Dilations in AveragePool arrived in opset 19.
    attrs = {
        "kernel_shape": [2, 3],
        "dilations": [2, 2],
        "strides": [1, 2],
        "pads": [1, 1, 1, 0],
        "count_include_pad": count_include_pad,
        "ceil_mode": 1,
    }
    model = single_op_model("AveragePool", {"x": _x((9, 10))}, attrs, opset=19)
    _check(dynamic_dims(model), (9, 10))


def test_static_average_pool_keeps_its_constant_divisors() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    model = single_op_model("AveragePool", {"x": _x((8, 8))}, attrs)
    static = {n.op_type for n in build_explain_model(model, "vanilla", "x", "y0").graph.node}
    assert not {"Conv", "Shape", "Slice", "ConstantOfShape"} & static
    dynamic = {n.op_type for n in build_explain_model(dynamic_dims(model), "vanilla").graph.node}
    assert {"Conv", "Slice", "ConstantOfShape"} <= dynamic


@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)])
def test_global_average_pool(spatial) -> None:
    model = dynamic_dims(single_op_model("GlobalAveragePool", {"x": _x(spatial)}))
    _check(model, spatial)
