"""Squeeze-excitation's backward in onnxruntime's blocked layout (rules/channel_gate.py): the
gate's broadcast and the spatial mean's spread as nearest Resizes, the sum over H and W as a
scaled GlobalAveragePool. Against torch float64 autograd on the same weights, at a dynamic
batch of 2, and across runtimes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnxplain.graph_rewrite import build_explain_model
from torch import nn

from helpers import runtimes
from helpers.fd import session
from helpers.nets import export_onnx


class SqueezeExcite(nn.Module):
    """timm's SE as MobileNets and EfficientNets write it: x·gate(mean over H, W)."""

    def __init__(self, channels: int, hard: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)
        self.gate = nn.Hardsigmoid() if hard else nn.Sigmoid()
        self.act = nn.ReLU() if hard else nn.SiLU()
        self.head = nn.Linear(channels, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(image))
        s = self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))
        y = self.act(x * s)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize(
    ("hard", "size"), [(False, 20), (True, 7), (False, 9)], ids=["silu-20", "hard-7", "silu-9"]
)
def test_squeeze_excitation_against_torch(hard: bool, size: int) -> None:
    torch.manual_seed(0)
    net = SqueezeExcite(16, hard).eval()
    image = torch.randn(2, 3, size, size)
    model = export_onnx(net, image[:1], softmax=False)
    explain = build_explain_model(model, "vanilla")
    ops = [n.op_type for n in explain.graph.node]
    # Resizes and the scaled pool, no broadcast ops.
    assert ops.count("Resize") == 3, ops  # the gate, its mean and the head's mean
    assert "Expand" not in ops and "ReduceSum" not in ops, ops

    seed = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    feeds = {"image": image.numpy(), "output_grad": seed}
    (ours,) = session(explain).run(["saliency"], feeds)
    x = image.double().requires_grad_(True)
    net.double()(x).backward(torch.tensor(seed, dtype=torch.float64))
    theirs = x.grad.numpy()
    assert np.linalg.norm(ours - theirs) <= 2e-6 * np.linalg.norm(theirs)


@pytest.mark.parametrize("name", runtimes.others())
def test_squeeze_excitation_across_runtimes(name: str) -> None:
    torch.manual_seed(1)
    net = SqueezeExcite(16, hard=False).eval()
    image = torch.randn(1, 3, 20, 20)
    explain = build_explain_model(export_onnx(net, image, softmax=False), "vanilla")
    feeds = {"image": image.numpy(), "output_grad": np.eye(5, dtype=np.float32)[[2]]}
    reference = runtimes.load(runtimes.REFERENCE, explain)(feeds, ["saliency"])[0]
    theirs = runtimes.load(name, explain)(feeds, ["saliency"])[0]
    assert np.linalg.norm(theirs - reference) <= 1e-5 * np.linalg.norm(reference)
