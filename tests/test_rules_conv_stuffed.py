"""Strided depthwise and narrow-grouped convs (mobile nets, RegNets): dy spread onto the
stride's grid, then a stride-1 grouped Conv (graph_rewrite/rules/conv_stuffed.py), against
torch float64 autograd on the same weights, against finite differences, and across
onnxruntime and OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnxplain.graph_rewrite import build_explain_model

from helpers import runtimes
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


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs"),
    [
        ((1, 24, 15, 15), (24, 1, 5, 5), {"pads": [2, 2, 2, 2], "group": 24}),  # depthwise
        ((1, 48, 15, 15), (48, 16, 3, 3), {"pads": [1, 1, 1, 1], "group": 3}),  # width 16
    ],
    ids=["depthwise", "grouped"],
)
def test_stuffed_form_agrees_on_openvino(x_shape, w_shape, attrs) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    model = single_op_model("Conv", {"x": x}, {"strides": [2, 2], **attrs}, {"w": w})
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    assert any("w_spread_grid" in i for n in explain.graph.node for i in n.input)
    dy = rng.standard_normal(session(model).run(None, {"x": x})[0].shape).astype(np.float32)
    feeds = {"x": x, "output_grad": dy}
    ours = session(explain).run(["saliency"], feeds)[0]
    (theirs,) = runtimes.load("openvino-cpu", explain)(feeds, ["saliency"])
    assert np.linalg.norm(theirs - ours) <= 1e-6 * np.linalg.norm(ours)


GROUPED = [
    # (channels in, weight shape, strides, stuffed): narrow groups at stride <= 2 take the form
    (64, (64, 16, 3, 3), [2, 2], True),  # RegNet's group width 16
    (32, (64, 8, 3, 3), [2, 2], True),  # 8 in, 16 out per group
    (16, (32, 1, 3, 3), [2, 2], True),  # depthwise, multiplier 2
    (64, (64, 32, 3, 3), [2, 1], True),  # width 32, strided along one axis
    (128, (128, 64, 3, 3), [2, 2], False),  # width 64: ConvTranspose is cheaper
    (32, (32, 16, 3, 3), [3, 3], False),  # stride 3: nine times the multiply-adds
]


@pytest.mark.parametrize(("channels", "w_shape", "strides", "stuffed"), GROUPED)
def test_grouped_convs_against_torch(channels, w_shape, strides, stuffed) -> None:
    """A grouped conv with at most NARROW_GROUP channels per group, at stride 2, takes the
    stuffed form; wider groups and larger strides keep ConvTranspose. Both exact."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, channels, 13, 12)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    group = channels // w_shape[1]
    attrs = {"strides": strides, "pads": [1, 1, 1, 1], "group": group}
    model = single_op_model("Conv", {"x": x}, attrs, {"w": w})
    explain = build_explain_model(model, "vanilla")
    transposed = [n for n in explain.graph.node if n.op_type == "ConvTranspose"]
    spreads = [n for n in transposed if "w_spread_grid" in n.input[1]]
    assert (len(spreads), len(transposed)) == ((1, 1) if stuffed else (0, 1))

    dy = rng.standard_normal(session(model).run(None, {"x": x})[0].shape).astype(np.float32)
    (ours,) = session(explain).run(["saliency"], {"x": x, "output_grad": dy})
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(xt, torch.tensor(w, dtype=torch.float64), stride=strides, padding=1, groups=group)
    assert tuple(y.shape) == dy.shape
    y.backward(torch.tensor(dy, dtype=torch.float64))
    theirs = xt.grad.numpy()
    assert np.linalg.norm(ours - theirs) <= 1e-6 * np.linalg.norm(theirs)
