"""Resize on inputs whose height and width are known only at run time (detectors, OCR):
one explain model per case, checked against central differences at two image sizes, for
every mode, coordinate transform and nearest rounding, scales or sizes, constant or
computed in the graph. Also: which form each case gets (block sum, measured matrix, run-time
matrix), and that a static model keeps its measured matrices."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.errors import RewriteError

from helpers.fd import assert_vjp_matches_at_sizes, dynamic_dims, single_op_model

TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SIZES = [(6, 8), (5, 7)]  # the two image sizes every explain model is checked at


def _x(*spatial: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, *spatial)).astype(np.float32)


def _model(spatial: tuple[int, ...], attrs: dict, scales=None, sizes=None, opset: int = 17):
    """A Resize with constant scales or sizes over an input of dynamic spatial size."""
    constants = {"roi": np.zeros(0, dtype=np.float32)}
    order = ["x", "roi", "scales"]
    if scales is not None:
        constants["scales"] = np.asarray(scales, dtype=np.float32)
    else:
        constants["scales"] = np.zeros(0, dtype=np.float32)
        constants["sizes"] = np.asarray(sizes, dtype=np.int64)
        order.append("sizes")
    model = single_op_model("Resize", {"x": _x(*spatial)}, attrs, constants, order, opset=opset)
    return dynamic_dims(model)


def _check(model: onnx.ModelProto, sizes=SIZES) -> onnx.ModelProto:
    feeds = [{"x": _x(*s, seed=i)} for i, s in enumerate(sizes)]
    return assert_vjp_matches_at_sizes(model, feeds, wrt="x")


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("transform", [*TRANSFORMS, "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("rounding", NEAREST)
@pytest.mark.parametrize("factor", [(2.0, 3.0), (0.5, 0.7), (1.0, 1.5)])
def test_nearest_with_scales(transform, rounding, factor) -> None:
    attrs = {"mode": "nearest", "coordinate_transformation_mode": transform}
    _check(_model(SIZES[0], {**attrs, "nearest_mode": rounding}, scales=[1, 1, *factor]))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("factor", [(2.0, 1.5), (0.5, 0.75)])
def test_interpolating_with_scales(transform, mode, factor) -> None:
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    _check(_model(SIZES[0], attrs, scales=[1, 1, *factor]))


@pytest.mark.parametrize(
    ("transform", "mode"),
    [
        (transform, mode)
        for transform in [*TRANSFORMS, "tf_half_pixel_for_nn"]
        for mode in ["nearest", "linear", "cubic"]
        # Interpolating with tf_half_pixel_for_nn is refused: see
        # test_shifting_interpolation_is_refused.
        if mode == "nearest" or transform != "tf_half_pixel_for_nn"
    ],
)
def test_constant_sizes(transform, mode) -> None:
    # A fixed output size from any input size: the scale differs at each input size.
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    _check(_model(SIZES[0], attrs, sizes=[2, 3, 9, 5]))


def test_cubic_options() -> None:
    attrs = {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}
    _check(_model(SIZES[0], attrs, scales=[1, 1, 1.75, 0.6]))


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_1d_and_3d(mode) -> None:
    if mode == "nearest":  # rank 1 has no second axis to lay an identity along
        one_d = dynamic_dims(
            single_op_model("Resize", {"x": np.zeros(7, np.float32)}, {"mode": mode},
                            {"roi": np.zeros(0, np.float32), "scales": np.array([2.5], np.float32)},
                            ["x", "roi", "scales"]),
            axes=(0,),
        )  # fmt: skip
        feeds = [{"x": np.arange(n, dtype=np.float32)} for n in (7, 4)]
        assert_vjp_matches_at_sizes(one_d, feeds, wrt="x")
    model = _model((3, 4, 5), {"mode": mode}, scales=[1, 1, 2, 1.5, 0.6])
    _check(model, sizes=[(3, 4, 5), (4, 3, 6)])


def test_opset18_axes_and_antialias() -> None:
    attrs = {"mode": "linear", "axes": [2, 3], "antialias": 1}
    _check(_model(SIZES[0], attrs, scales=[0.5, 0.6], opset=18))


@pytest.mark.parametrize("built", ["shape", "sliced_shapes"])
def test_sizes_from_another_tensor(built) -> None:
    """sizes = Shape(ref): the usual FPN 'upsample to the skip connection's size'; or as
    PyTorch exports it, Concat(Shape(x)[:2], Shape(ref)[2:])."""
    if built == "shape":
        sizes = [helper.make_node("Shape", ["ref"], ["sizes"])]
    else:
        sizes = [
            helper.make_node("Shape", ["x"], ["x_shape"]),
            helper.make_node("Shape", ["ref"], ["ref_hw"], start=2),
            helper.make_node("Slice", ["x_shape", "zero", "two"], ["x_nc"]),
            helper.make_node("Concat", ["x_nc", "ref_hw"], ["sizes"], axis=0),
        ]
    nodes = [
        *sizes,
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y0"], mode="linear"),
        helper.make_node("Add", ["y0", "ref"], ["y1"]),
    ]
    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        nodes,
        "fpn",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"]),
            helper.make_tensor_value_info("ref", TensorProto.FLOAT, dims),
        ],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, dims)],
        [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("zero", 0), ("two", 2))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [
        {"x": _x(4, 5), "ref": _x(8, 9, seed=1)},
        {"x": _x(3, 7, seed=2), "ref": _x(5, 13, seed=3)},
    ]
    explain = assert_vjp_matches_at_sizes(model, feeds, wrt="x", output="y1")
    # Batch and channels keep their size (same symbols): only H and W get matrices.
    assert _ops(explain).count("MatMul") == 2


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_scales_computed_in_the_graph(mode) -> None:
    """scales = Concat([1, 1], Mul(f, [2, 2])): known only at run time, batch and channels
    read as left alone from the constant part."""
    nodes = [
        helper.make_node("Mul", ["f", "two"], ["hw"]),
        helper.make_node("Concat", ["ones", "hw"], ["scales"], axis=0),
        helper.make_node("Resize", ["x", "", "scales"], ["y0"], mode=mode),
    ]
    graph = helper.make_graph(
        nodes,
        "computed_scales",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"]),
            helper.make_tensor_value_info("f", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.ones(2, np.float32), "ones"),
            numpy_helper.from_array(np.full(2, 2.0, np.float32), "two"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [
        {"x": _x(4, 5), "f": np.array([1.0, 0.75], np.float32)},
        {"x": _x(3, 6, seed=1), "f": np.array([0.5, 1.5], np.float32)},
    ]
    explain = assert_vjp_matches_at_sizes(model, feeds, wrt="x")
    assert _ops(explain).count("MatMul") == 2


@pytest.mark.parametrize(
    ("transform", "rounding"),
    [
        ("asymmetric", "floor"),  # Paddle's and TensorFlow's upsampling
        ("half_pixel", "round_prefer_floor"),  # PyTorch's nn.Upsample(mode="nearest-exact")
        ("half_pixel", "round_prefer_ceil"),
        ("tf_half_pixel_for_nn", "floor"),
    ],
)
@pytest.mark.parametrize("dynamic", [True, False])
def test_integer_nearest_upsampling_sums_blocks(transform, rounding, dynamic) -> None:
    attrs = {
        "mode": "nearest",
        "coordinate_transformation_mode": transform,
        "nearest_mode": rounding,
    }
    model = _model(SIZES[0], attrs, scales=[1, 1, 2, 3])
    if dynamic:
        explain = _check(model)
    else:
        static = single_op_model(
            "Resize", {"x": _x(*SIZES[0])}, attrs,
            {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 3], np.float32)},
            ["x", "roi", "scales"],
        )  # fmt: skip
        explain = _check(static, sizes=SIZES[:1])
    ops = _ops(explain)
    assert "AveragePool" in ops and "MatMul" not in ops


def test_non_block_nearest_upsampling_gets_matrices() -> None:
    # asymmetric + round_prefer_ceil sends output 2k+1 (at k + 0.5) to k+1: no block copy.
    attrs = {
        "mode": "nearest",
        "coordinate_transformation_mode": "asymmetric",
        "nearest_mode": "round_prefer_ceil",
    }
    explain = _check(_model(SIZES[0], attrs, scales=[1, 1, 2, 2]))
    assert "AveragePool" not in _ops(explain) and _ops(explain).count("MatMul") == 2


def test_static_shapes_keep_measured_matrices() -> None:
    """Known sizes: the matrices are constants measured at convert time, nothing built in
    the graph; the same node on a dynamic input builds them at run time."""
    attrs = {"mode": "linear"}
    consts = {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 1.5], np.float32)}
    static = single_op_model("Resize", {"x": _x(6, 8)}, attrs, consts, ["x", "roi", "scales"])
    static_ops = _ops(build_explain_model(static, "vanilla", input_name="x", output_name="y0"))
    assert static_ops.count("MatMul") == 2
    assert not {"Range", "Equal", "Shape"} & set(static_ops)
    assert static_ops.count("Resize") == 1  # the forward one
    dynamic_ops = _ops(build_explain_model(dynamic_dims(static), "vanilla", "x", "y0"))
    assert dynamic_ops.count("MatMul") == 2 and dynamic_ops.count("Resize") == 3


def test_shifting_interpolation_is_refused() -> None:
    # tf_half_pixel_for_nn samples at i + 0.5 even at scale 1: the identity laid along a
    # second axis would be moved too, so a run-time matrix cannot be read off exactly.
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}
    model = _model(SIZES[0], attrs, scales=[1, 1, 2, 2])
    with pytest.raises(RewriteError, match="tf_half_pixel_for_nn"):
        build_explain_model(model, "vanilla", input_name="x", output_name="y0")
