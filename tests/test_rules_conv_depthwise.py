"""Strided depthwise convs (mobile nets): dy spread onto the stride's grid, then a stride-1
depthwise Conv (graph_rewrite/rules/conv_depthwise.py), against torch float64 autograd on the
same weights, against finite differences, and across onnxruntime and OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches, session, single_op_model

CASES = [
    # (spatial, kernel, attrs)
    ((16, 16), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # MobileNet's 3x3/2
    ((14, 14), (5, 5), {"strides": [2, 2], "pads": [2, 2, 2, 2]}),  # and 5x5/2
    ((15, 13), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # odd sizes
    ((12, 12), (3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),  # TF-style SAME pads
    ((11, 12), (3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((13, 14), (4, 3), {"strides": [3, 2], "pads": [1, 0, 2, 1]}),  # uneven
    ((17, 17), (3, 3), {"strides": [2, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((9, 10), (1, 1), {"strides": [2, 2]}),  # grid past x's end: s·out > n + p, cut back
    ((10, 9), (3, 3), {"strides": [2, 1], "pads": [1, 1, 1, 1]}),  # strided along one axis
]


def _same_upper(spatial, strides, kernel) -> list[int]:
    totals = [max((-(-n // s) - 1) * s + k - n, 0) for n, s, k in zip(spatial, strides, kernel)]
    return [t // 2 for t in totals] + [t - t // 2 for t in totals]


@pytest.mark.parametrize(("spatial", "kernel", "attrs"), CASES)
def test_strided_depthwise_conv_against_torch(spatial, kernel, attrs) -> None:
    channels = 16
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, channels, *spatial)).astype(np.float32)
    w = rng.standard_normal((channels, 1, *kernel)).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    model = single_op_model("Conv", {"x": x}, {**attrs, "group": channels}, {"w": w, "b": b})
    explain = build_explain_model(model, "vanilla")
    ops = [n.op_type for n in explain.graph.node]
    # The spreading is the only ConvTranspose, 1x1; the kernel's work is a Conv.
    spreads = [n for n in explain.graph.node if n.op_type == "ConvTranspose"]
    assert len(spreads) == 1 and "w_spread_grid" in spreads[0].input[1], ops

    dy = rng.standard_normal(session(model).run(None, {"x": x})[0].shape).astype(np.float32)
    (ours,) = session(explain).run(["saliency"], {"x": x, "output_grad": dy})
    strides = attrs["strides"]
    pads = attrs.get("pads") or _same_upper(spatial, strides, kernel)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    padded = F.pad(xt, (pads[1], pads[3], pads[0], pads[2]))
    y = F.conv2d(
        padded,
        torch.tensor(w, dtype=torch.float64),
        stride=strides,
        dilation=attrs.get("dilations", [1, 1]),
        groups=channels,
    )
    assert tuple(y.shape) == dy.shape
    y.backward(torch.tensor(dy, dtype=torch.float64))
    theirs = xt.grad.numpy()
    assert np.linalg.norm(ours - theirs) <= 1e-6 * np.linalg.norm(theirs)
    assert_vjp_matches(model, {"x": x}, wrt="x")


def test_depthwise_form_agrees_on_openvino() -> None:
    ov = pytest.importorskip("openvino")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 24, 15, 15)).astype(np.float32)
    w = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [2, 2, 2, 2], "group": 24}
    model = single_op_model("Conv", {"x": x}, attrs, {"w": w})
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    dy = rng.standard_normal(session(model).run(None, {"x": x})[0].shape).astype(np.float32)
    feeds = {"x": x, "output_grad": dy}
    ours = session(explain).run(["saliency"], feeds)[0]
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(explain.SerializeToString(), b""),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32"},
    )
    theirs = compiled(feeds)[compiled.output("saliency")]
    assert np.linalg.norm(theirs - ours) <= 1e-6 * np.linalg.norm(ours)


@pytest.mark.parametrize(
    "w_shape", [(16, 2, 3, 3), (32, 1, 3, 3)], ids=["two inputs per group", "multiplier 2"]
)
def test_other_grouped_convs_keep_conv_transpose(w_shape) -> None:
    """Only multiplier-1 depthwise convs take the form: a grouped conv with more than one
    input or output per group keeps ConvTranspose with its kernel, still exact."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    group = 16 // w_shape[1]
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "group": group}
    model = single_op_model("Conv", {"x": x}, attrs, {"w": w})
    nodes = build_explain_model(model, "vanilla").graph.node
    assert not any("w_spread_grid" in i for n in nodes for i in n.input)
    assert any(n.op_type == "ConvTranspose" for n in nodes)
    assert_vjp_matches(model, {"x": x}, wrt="x")
