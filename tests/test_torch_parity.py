"""Parity with PyTorch on the same weights: autograd, Captum Deconvolution and GuidedBackprop.

Each net is exported (ending in a Softmax, so the explain model must pick the logits by
default) with a dynamic batch axis, and explained for a batch of two samples that ask
for different classes: `output_grad` holds one one-hot row per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from onnxplain.graph_rewrite import build_explain_model
from torch import nn

from helpers.fd import session
from helpers.nets import AllCNNC, ResNetStyle, VGGStyle, export_onnx, randomise_batchnorm

TARGETS = [3, 7]
CLASSES = 10
SIDE = 32
# The bound, relative to the reference's largest entry.
RELATIVE_BOUND = 1e-4


@dataclass
class Case:
    net: nn.Module
    model: onnx.ModelProto
    image: np.ndarray  # float32, [2, 3, SIDE, SIDE]

    @property
    def one_hot(self) -> np.ndarray:
        return np.eye(CLASSES, dtype=np.float32)[TARGETS]


NETS: dict[str, Callable[[], nn.Module]] = {
    "vgg_style": lambda: VGGStyle(CLASSES, SIDE),
    "resnet_style": lambda: ResNetStyle(CLASSES),
    "all_cnn_c": lambda: AllCNNC(CLASSES),  # the paper's widths, 96 and 192
}


@pytest.fixture(scope="module", params=sorted(NETS))
def case(request: pytest.FixtureRequest) -> Case:
    generator = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    net = NETS[request.param]()
    randomise_batchnorm(net, generator)
    net.eval()
    image = torch.randn(2, 3, SIDE, SIDE, generator=generator)
    return Case(net, export_onnx(net, image), image.numpy())


def ours(case: Case, method: str, rectifiers: str = "all") -> np.ndarray:
    explain = build_explain_model(case.model, method, rectifiers=rectifiers)
    sess = session(explain)
    return sess.run(["saliency"], {"image": case.image, "output_grad": case.one_hot})[0]


def theirs(case: Case, method: str) -> np.ndarray:
    x = torch.from_numpy(case.image.copy()).requires_grad_(True)
    if method == "vanilla":
        logits = case.net(x)
        logits.backward(torch.from_numpy(case.one_hot))
        assert x.grad is not None
        return x.grad.numpy()
    explainer = Deconvolution(case.net) if method == "deconvnet" else GuidedBackprop(case.net)
    return explainer.attribute(x, target=TARGETS).detach().numpy()


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_matches_pytorch(case: Case, method: str) -> None:
    got, want = ours(case, method), theirs(case, method)
    assert got.shape == want.shape == case.image.shape
    # Both samples must carry signal, or a wrong batch handling could hide.
    assert all(np.abs(want[i]).max() > 0 for i in range(2))
    err = np.abs(got - want).max()
    assert err <= RELATIVE_BOUND * np.abs(want).max(), (
        f"{method}: max |ours - theirs| = {err:.3g}, max |theirs| = {np.abs(want).max():.3g}"
    )


@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_relu_only_rectifiers_change_nothing_on_relu_nets(case: Case, method: str) -> None:
    # These nets rectify with Relu alone, so counting ReLU6/LeakyRelu/... as rectifiers
    # or not must give the very same explain model and numbers.
    np.testing.assert_array_equal(ours(case, method, "relu"), ours(case, method, "all"))
