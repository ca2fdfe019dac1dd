"""Architectures beyond plain CNNs, against PyTorch on the same weights.

- a small vision transformer (patch embedding conv, class token Concat, position Add,
  LayerNorm, multi-head attention through MatMul/Softmax/Transpose/Reshape, GELU as Erf,
  class-token Gather) and
- a MobileNetV3-style net (depthwise convs, ReLU6 as Clip, HardSwish, squeeze-excitation
  with HardSigmoid and Mul, an average-pooled head),

exported with a dynamic batch. Vanilla saliency is checked against torch.autograd in both;
guided and deconvnet, with `rectifiers="relu"`, against Captum on the MobileNet's ReLU layers,
and with `rectifiers="all"` against Captum after ReLU6/Hardswish modules take ReLU's rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnxplain.graph_rewrite import build_explain_model
from torch import nn

from helpers.fd import session
from helpers.nets import export_onnx

CLASSES = 10
TARGETS = [2, 5]
RELATIVE_BOUND = 1e-4


class TinyViT(nn.Module):
    def __init__(self, side: int = 16, patch: int = 4, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = (side // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.5)
        self.norm1 = nn.LayerNorm(dim)
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        n, length, dim = t.shape
        q, k, v = (
            self.qkv(self.norm1(t))
            .reshape(n, length, 3, self.heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        attention = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, dim=-1)
        t = t + self.proj((attention @ v).transpose(1, 2).reshape(n, length, dim))
        t = t + self.mlp(self.norm2(t))
        return self.head(t[:, 0])


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(channels // 4, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class MobileStyle(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.Hardswish(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise
            nn.ReLU6(),
            SqueezeExcite(16),
            nn.Conv2d(16, 24, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(24, CLASSES),
        )


def _one_hot() -> np.ndarray:
    return np.eye(CLASSES, dtype=np.float32)[TARGETS]


def _ours(net: nn.Module, image: torch.Tensor, method: str, rectifiers: str) -> np.ndarray:
    model = export_onnx(net, image)
    explain = build_explain_model(model, method, rectifiers=rectifiers)  # type: ignore[arg-type]
    feeds = {"image": image.numpy(), "output_grad": _one_hot()}
    return session(explain).run(["saliency"], feeds)[0]


def _autograd(net: nn.Module, image: torch.Tensor) -> np.ndarray:
    x = image.clone().requires_grad_(True)
    net(x).backward(torch.from_numpy(_one_hot()))
    assert x.grad is not None
    return x.grad.numpy()


def _assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    scale = float(np.abs(theirs).max())
    assert scale > 0
    assert float(np.abs(ours - theirs).max()) <= RELATIVE_BOUND * scale


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))


def _net(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(3)
    net = cls()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("cls", [TinyViT, MobileStyle])
def test_vanilla_matches_autograd(cls: type[nn.Module], image: torch.Tensor) -> None:
    net = _net(cls)
    _assert_close(_ours(net, image, "vanilla", "all"), _autograd(net, image))


def _captum(net: nn.Module, image: torch.Tensor, method: str) -> np.ndarray:
    from captum.attr import Deconvolution, GuidedBackprop

    attr = (GuidedBackprop if method == "guided" else Deconvolution)(net)
    rows = [
        attr.attribute(image[i : i + 1].clone(), target=t).detach().numpy()
        for i, t in enumerate(TARGETS)
    ]
    return np.concatenate(rows)


@pytest.mark.parametrize("method", ["guided", "deconvnet"])
def test_relu_only_matches_captum(method: str, image: torch.Tensor) -> None:
    # Captum overrides nn.ReLU alone: ReLU6 and Hardswish keep their true gradient.
    net = _net(MobileStyle)
    _assert_close(_ours(net, image, method, "relu"), _captum(net, image, method))


class _RectifierAsRelu(torch.autograd.Function):
    """f forward; backward as `--rectifiers all` defines it: the method's gate times f'."""

    @staticmethod
    def forward(ctx, x, module, use_forward):  # type: ignore[no-untyped-def]
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            y = module(xr)
            (slope,) = torch.autograd.grad(y.sum(), xr)
        ctx.save_for_backward(slope)
        ctx.use_forward = use_forward
        return y.detach()

    @staticmethod
    def backward(ctx, dy):  # type: ignore[no-untyped-def]
        (slope,) = ctx.saved_tensors
        dx = torch.relu(dy)
        return (dx * slope if ctx.use_forward else dx), None, None


class _Gated(nn.Module):
    def __init__(self, module: nn.Module, use_forward: bool) -> None:
        super().__init__()
        self.module, self.use_forward = module, use_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RectifierAsRelu.apply(x, self.module, self.use_forward)


@pytest.mark.parametrize("method", ["guided", "deconvnet"])
def test_all_rectifiers_follow_the_method(method: str, image: torch.Tensor) -> None:
    """ReLU, ReLU6 and Hardswish all get the method's rule; the SE gate keeps its gradient."""
    net = _net(MobileStyle)
    ours = _ours(net, image, method, "all")
    gated = _net(MobileStyle)
    use_forward = method == "guided"
    for name, module in list(gated.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.Hardswish)):
                setattr(module, child_name, _Gated(child, use_forward))
        del name
    _assert_close(ours, _autograd(gated, image))
