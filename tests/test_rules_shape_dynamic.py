"""Slice and Pad on axes whose length is known only at run time: crops with negative
bounds, strided picks (YOLOX's Focus stem takes x[..., 0::2, 1::2]), edge, reflect and
wrap padding. One explain model per case, checked against central differences at two
lengths of different parity."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.errors import RewriteError

from helpers.fd import assert_vjp_matches_at_sizes, dynamic_dims, single_op_model

I32_MAX = 2**31 - 1

SLICE_CASES = [
    # (starts, ends, axes, steps)
    ([1], [-1], [2], [1]),  # a one-pixel crop
    ([-3], [I32_MAX], [3], [1]),  # the last three
    ([0, 1], [I32_MAX, I32_MAX], [2, 3], [2, 2]),  # Focus
    ([1, 0], [-1, 5], [2, 3], [3, 2]),  # strided, bounded
    ([-4], [-1], [3], [2]),  # negative bounds, strided
    ([20], [I32_MAX], [2], [1]),  # past the end: nothing taken
    ([1, 0], [3, I32_MAX], [1, 2], [1, 2]),  # a static axis and a dynamic one
]


def _slice_model(starts, ends, axes, steps):
    bounds = dict(zip(["starts", "ends", "axes", "steps"], (starts, ends, axes, steps)))
    consts = {n: np.array(v, np.int64) for n, v in bounds.items()}
    return dynamic_dims(single_op_model("Slice", {"x": _x((7, 8))}, {}, consts))


def _x(spatial: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 4, *spatial)).astype(np.float32)


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), SLICE_CASES)
def test_slice_of_dynamic_axes(starts, ends, axes, steps) -> None:
    model = _slice_model(starts, ends, axes, steps)
    feeds = [{"x": _x((7, 8))}, {"x": _x((10, 9), seed=1)}]
    assert_vjp_matches_at_sizes(model, feeds, wrt="x")


def test_negative_step_on_a_dynamic_axis_is_refused() -> None:
    model = _slice_model([-1], [-I32_MAX], [2], [-1])
    with pytest.raises(RewriteError, match="negative step"):
        build_explain_model(model, "vanilla", input_name="x", output_name="y0")


@pytest.mark.parametrize(
    ("mode", "pads", "opset"),
    [
        ("constant", [0, 0, 1, 2, 0, 0, 3, 0], 17),
        ("constant", [0, 0, -1, 2, 0, 0, 1, -2], 17),
        ("edge", [0, 0, 2, 1, 0, 0, 1, 3], 17),
        ("reflect", [0, 0, 2, 3, 0, 0, 3, 1], 17),  # ReflectionPad2d of segmentation nets
        ("wrap", [0, 0, 2, 1, 0, 0, 1, 5], 19),
    ],
)
def test_pad_of_dynamic_axes(mode, pads, opset) -> None:
    consts = {"pads": np.array(pads, np.int64)}
    model = single_op_model("Pad", {"x": _x((7, 8))}, {"mode": mode}, consts, opset=opset)
    feeds = [{"x": _x((7, 8))}, {"x": _x((10, 9), seed=1)}]
    assert_vjp_matches_at_sizes(dynamic_dims(model), feeds, wrt="x")
