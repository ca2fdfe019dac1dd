"""Conv rules against central finite differences, over strides, pads, dilations, groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches, session, single_op_model

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


PHASE_CASES = [
    # (spatial, kernel, attrs): strided 2-D convs of few input channels (the phase form)
    ((32, 32), (7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),  # an image model's stem
    ((15, 15), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # odd size
    ((8, 9), (1, 1), {"strides": [2, 2]}),  # taps on one phase only
    ((17, 16), (5, 4), {"strides": [3, 3], "pads": [2, 1, 2, 1]}),
    ((10, 11), (4, 3), {"strides": [2, 2], "pads": [0, 1, 2, 0]}),  # uneven pads
    ((9, 10), (3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
]


@pytest.mark.parametrize(("spatial", "kernel", "attrs"), PHASE_CASES)
def test_strided_conv_phase_form(spatial, kernel, attrs) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, *spatial)).astype(np.float32)
    w = rng.standard_normal((5, 3, *kernel)).astype(np.float32)
    model = single_op_model("Conv", {"x": x}, attrs, {"w": w})
    ops = {n.op_type for n in build_explain_model(model, "vanilla").graph.node}
    assert "DepthToSpace" in ops and "ConvTranspose" not in ops
    assert_vjp_matches(model, {"x": x}, wrt="x")
    # and against torch on the same weights
    dy = rng.standard_normal(session(model).run(None, {"x": x})[0].shape).astype(np.float32)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    pads = attrs.get("pads", [0, 0, 0, 0])
    if attrs.get("auto_pad") == "SAME_LOWER":  # the larger half of the padding goes first
        totals = [
            max((-(-n // s) - 1) * s + k - n, 0)
            for n, s, k in zip(spatial, attrs["strides"], kernel)
        ]
        pads = [t - t // 2 for t in totals] + [t // 2 for t in totals]
    padded = F.pad(xt, (pads[1], pads[3], pads[0], pads[2]))
    y = F.conv2d(padded, torch.tensor(w, dtype=torch.float64), stride=attrs["strides"])
    y.backward(torch.tensor(dy, dtype=torch.float64))
    explain = session(build_explain_model(model, "vanilla"))
    (ours,) = explain.run(["saliency"], {"x": x, "output_grad": dy})
    theirs = xt.grad.numpy()
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_phase_form_declines_pads_past_the_kernel() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = single_op_model("Conv", {"x": x}, {"strides": [2, 2], "pads": [5, 5, 5, 5]}, {"w": w})
    ops = {n.op_type for n in build_explain_model(model, "vanilla").graph.node}
    assert "ConvTranspose" in ops and "DepthToSpace" not in ops
    assert_vjp_matches(model, {"x": x}, wrt="x")


def test_strided_conv_of_many_channels_is_anchored_in_blocked_layout() -> None:
    """ConvTranspose for wide convs, its result passed through an identity AveragePool."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 10, 10)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    model = single_op_model("Conv", {"x": x}, {"strides": [2, 2], "pads": [1, 1, 1, 1]}, {"w": w})
    nodes = build_explain_model(model, "vanilla").graph.node
    transposed = next(n for n in nodes if n.op_type == "ConvTranspose")
    anchor = next(n for n in nodes if n.input and n.input[0] == transposed.output[0])
    assert anchor.op_type == "AveragePool"
    assert list(next(a for a in anchor.attribute if a.name == "kernel_shape").ints) == [1, 1]
    assert_vjp_matches(model, {"x": x}, wrt="x")


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_backward_has_its_own_copy_of_a_square_weight(op) -> None:
    """OpenVINO computes a wrong Conv or ConvTranspose when one square weight feeds both
    (rel. error ~1.4 against onnxruntime); the backward reads its own copy."""
    ov = pytest.importorskip("openvino")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 7, 6)).astype(np.float32)
    w = rng.standard_normal((16, 16, 2, 2)).astype(np.float32)
    model = single_op_model(op, {"x": x}, {"strides": [2, 2]}, {"w": w})
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    users = [n.op_type for n in explain.graph.node if "w" in n.input]
    assert users == [op]
    dy = rng.standard_normal(session(model).run(None, {"x": x})[0].shape).astype(np.float32)
    feeds = {"x": x, "output_grad": dy}
    ours = session(explain).run(["saliency"], feeds)[0]
    compiled = ov.Core().compile_model(
        ov.Core().read_model(explain.SerializeToString(), b""),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32"},
    )
    theirs = compiled(feeds)[compiled.output("saliency")]
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5 * np.abs(ours).max())
