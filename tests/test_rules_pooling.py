"""Pooling rules against central finite differences: overlapping windows, ceil_mode,
pads, auto_pad, dilations, count_include_pad, in 1-D, 2-D and 3-D."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches, dynamic_batch, session, single_op_model

MAX_POOL_CASES = [
    # (spatial, attrs)
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2]}),  # overlapping windows
    ((10, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((8, 7), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    ((9, 9), {"kernel_shape": [2, 3], "dilations": [2, 2]}),
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((8, 8), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((8, 8), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "VALID"}),
    ((11,), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),  # 1-D
    ((5, 6, 7), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 2], "ceil_mode": 1}),  # 3-D
]

AVERAGE_POOL_CASES = [
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ((10, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((8, 7), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    ((7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((11,), {"kernel_shape": [3], "strides": [2], "pads": [1, 2]}),  # 1-D
    ((5, 6, 7), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 2], "ceil_mode": 1}),  # 3-D
]


def _x(spatial: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, *spatial)).astype(np.float32)


def _distinct(spatial: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values 0.25 apart, so that no finite-difference step (float32's is 1e-2) moves a max."""
    shape = (2, 3, *spatial)
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))) * 0.25
    return values.reshape(shape).astype(np.float32)


@pytest.mark.parametrize(("spatial", "attrs"), MAX_POOL_CASES)
def test_max_pool(spatial, attrs) -> None:
    x = _distinct(spatial)
    assert_vjp_matches(single_op_model("MaxPool", {"x": x}, attrs), {"x": x}, wrt="x")


def test_max_pool_reuses_an_existing_indices_output() -> None:
    x = _x((9, 9))
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2]}
    model = single_op_model("MaxPool", {"x": x}, attrs, n_outputs=2)
    assert_vjp_matches(model, {"x": x}, wrt="x")
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    pools = [n for n in explain.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 1 and list(pools[0].output) == ["y0", "y1"]


def test_max_pool_ties_go_to_the_first_maximum() -> None:
    # Every window of a constant input ties: onnxruntime's Indices pick each window's
    # first position, which is what torch's max_pool2d backward does too.
    torch = pytest.importorskip("torch")
    x = np.ones((1, 2, 7, 7), dtype=np.float32)
    model = single_op_model("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "strides": [2, 2]})
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    dy = np.random.default_rng(1).standard_normal((1, 2, 3, 3)).astype(np.float32)
    saliency = session(explain).run(["saliency"], {"x": x, "output_grad": dy})[0]
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 3, 2).backward(torch.tensor(dy))
    np.testing.assert_allclose(saliency, xt.grad.numpy(), rtol=1e-6)


def test_max_pool_dynamic_batch() -> None:
    x = _x((9, 9))
    model = single_op_model("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "strides": [2, 2]})
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert_vjp_matches(model, {"x": x}, wrt="x")


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize(("spatial", "attrs"), AVERAGE_POOL_CASES)
def test_average_pool(spatial, attrs, count_include_pad) -> None:
    x = _x(spatial)
    attrs = {**attrs, "count_include_pad": count_include_pad}
    assert_vjp_matches(single_op_model("AveragePool", {"x": x}, attrs), {"x": x}, wrt="x")


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_dilated(count_include_pad) -> None:
    # Dilations in AveragePool arrived in opset 19.
    x = _x((9, 10))
    attrs = {
        "kernel_shape": [2, 3],
        "dilations": [2, 2],
        "strides": [1, 2],
        "pads": [1, 1, 1, 0],
        "count_include_pad": count_include_pad,
    }
    model = single_op_model("AveragePool", {"x": x}, attrs, opset=19)
    assert_vjp_matches(model, {"x": x}, wrt="x")


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)])
def test_global_pools(op, spatial) -> None:
    x = _distinct(spatial) if op == "GlobalMaxPool" else _x(spatial)
    assert_vjp_matches(single_op_model(op, {"x": x}), {"x": x}, wrt="x")


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools_dynamic_shape(op) -> None:
    x = _distinct((5, 6)) if op == "GlobalMaxPool" else _x((5, 6))
    model = single_op_model(op, {"x": x})
    for vi in (model.graph.input[0], model.graph.output[0]):
        dims = vi.type.tensor_type.shape.dim
        for i in (0, 2, 3):
            if i < len(dims):
                dims[i].dim_param = f"d{i}"
    del model.graph.value_info[:]
    assert_vjp_matches(model, {"x": x}, wrt="x")


def test_max_pool_rejects_column_major_indices() -> None:
    from onnxplain.graph_rewrite.errors import RewriteError

    x = _x((6, 6))
    model = single_op_model("MaxPool", {"x": x}, {"kernel_shape": [2, 2], "storage_order": 1})
    with pytest.raises(RewriteError, match="storage_order"):
        build_explain_model(model, "vanilla", input_name="x", output_name="y0")


@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)])
@pytest.mark.parametrize("batch", [2, "N"])
def test_float32_global_average_pool_spreads_by_conv(spatial, batch) -> None:
    """float32: a depthwise Conv spreads dy; each element is exactly dy·(1/count)."""
    x = _x(spatial)
    model = single_op_model("GlobalAveragePool", {"x": x})
    if batch == "N":
        model = dynamic_batch(model)
    explain = build_explain_model(model, "vanilla")
    assert "Conv" in {n.op_type for n in explain.graph.node}
    dy = np.random.default_rng(5).standard_normal((2, 3, *[1] * len(spatial))).astype(np.float32)
    (saliency,) = session(explain).run(["saliency"], {"x": x, "output_grad": dy})
    count = np.float32(1.0 / np.prod(spatial))
    np.testing.assert_array_equal(saliency, np.broadcast_to(dy * count, x.shape))


def test_large_global_average_pool_spreads_by_expand() -> None:
    """Above 16x16 the spreading Conv's (H·W)² work outgrows its layout gain (squeeze-excite
    blocks of detectors pool 160x160 maps): Mul+Expand, the same products."""
    x = _x((17, 20))
    model = single_op_model("GlobalAveragePool", {"x": x})
    explain = build_explain_model(model, "vanilla")
    assert "Conv" not in {n.op_type for n in explain.graph.node}
    assert_vjp_matches(model, {"x": x}, wrt="x")
