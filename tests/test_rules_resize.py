"""Resize against central finite differences: every mode, coordinate transform and
nearest rounding, with scales or with sizes, up- and downsampling, 1-D to 3-D."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.fd import assert_vjp_matches, single_op_model

TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _model(x: np.ndarray, attrs: dict, scales=None, sizes=None, opset: int = 17):
    constants = {"roi": np.zeros(0, dtype=np.float32)}
    order = ["x", "roi"]
    if scales is not None:
        constants["scales"] = np.asarray(scales, dtype=np.float32)
        order.append("scales")
    else:
        constants["scales"] = np.zeros(0, dtype=np.float32)
        constants["sizes"] = np.asarray(sizes, dtype=np.int64)
        order += ["scales", "sizes"]
    return single_op_model("Resize", {"x": x}, attrs, constants, order, opset=opset)


def _x(*spatial: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, *spatial)).astype(np.float32)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("factor", [(2.0, 1.5), (0.5, 0.75)])
def test_resize_interpolating_with_scales(transform, mode, factor) -> None:
    x = _x(6, 8)
    model = _model(
        x, {"mode": mode, "coordinate_transformation_mode": transform}, scales=[1, 1, *factor]
    )
    assert_vjp_matches(model, {"x": x}, wrt="x")


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_interpolating_with_sizes(transform, mode) -> None:
    x = _x(6, 8)
    model = _model(
        x, {"mode": mode, "coordinate_transformation_mode": transform}, sizes=[2, 3, 9, 5]
    )
    assert_vjp_matches(model, {"x": x}, wrt="x")


@pytest.mark.parametrize("transform", [*TRANSFORMS, "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("rounding", NEAREST)
@pytest.mark.parametrize("factor", [(2.0, 3.0), (0.5, 0.7)])
def test_resize_nearest(transform, rounding, factor) -> None:
    x = _x(6, 8)
    attrs = {
        "mode": "nearest",
        "coordinate_transformation_mode": transform,
        "nearest_mode": rounding,
    }
    assert_vjp_matches(_model(x, attrs, scales=[1, 1, *factor]), {"x": x}, wrt="x")


def test_resize_cubic_options() -> None:
    x = _x(7, 5)
    attrs = {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}
    assert_vjp_matches(_model(x, attrs, sizes=[2, 3, 11, 4]), {"x": x}, wrt="x")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_1d_and_3d(mode) -> None:
    x1 = _x(7)
    assert_vjp_matches(_model(x1, {"mode": mode}, scales=[1, 1, 2.5]), {"x": x1}, wrt="x")
    x3 = _x(3, 4, 5)
    model = _model(x3, {"mode": mode}, scales=[1, 1, 2, 1.5, 0.6])
    assert_vjp_matches(model, {"x": x3}, wrt="x")


def test_resize_axes_and_antialias() -> None:
    # opset 18: scales for the listed axes only, and antialiased downsampling.
    x = _x(8, 9)
    attrs = {"mode": "linear", "axes": [2, 3], "antialias": 1}
    assert_vjp_matches(_model(x, attrs, scales=[0.5, 0.6], opset=18), {"x": x}, wrt="x")
