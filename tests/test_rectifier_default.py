"""The rectifier default (issue 17, item 8): deconvnet and guided backprop give their rule to
Relu alone unless asked (`rectifiers="all"`), as Captum and pytorch-grad-cam do, so a map
compared with theirs matches; `onnxplain convert` says which activations kept their true
gradient.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from onnxplain.graph_rewrite import build_explain_model
from torch import nn

from helpers.fd import session
from helpers.nets import export_onnx

CLASSES = 10


class MobileBlock(nn.Sequential):
    """A MobileNetV3-like stem: HardSwish, a depthwise conv with ReLU6, a ReLU head."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.Hardswish(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16),
            nn.ReLU6(),
            nn.Conv2d(16, 24, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(24, CLASSES),
        )


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(11)
    return MobileBlock().eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(12))


def _map(model: onnx.ModelProto, image: torch.Tensor, method: str, **kwargs: object) -> np.ndarray:
    explain = build_explain_model(model, method, **kwargs)  # type: ignore[arg-type]
    seed = np.eye(CLASSES, dtype=np.float32)[[2, 5]]
    return session(explain).run(["saliency"], {"image": image.numpy(), "output_grad": seed})[0]


def _relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("method", ["guided", "deconvnet"])
def test_the_default_matches_captum_and_all_is_reachable(
    net: nn.Module, image: torch.Tensor, method: str
) -> None:
    model = export_onnx(net, image)
    explainer = GuidedBackprop(net) if method == "guided" else Deconvolution(net)
    want = explainer.attribute(image.clone().requires_grad_(True), target=torch.tensor([2, 5]))
    want = want.detach().numpy()
    default = _map(model, image, method)
    assert _relative_l2(default, want) < 1e-5
    # The other reading: ReLU6 and HardSwish rectified too, which Captum does not do.
    assert _relative_l2(_map(model, image, method, rectifiers="all"), want) > 1e-2


def _convert(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onnxplain", "convert", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,  # not the repo root, whose onnxplain/ folder is partial
    )


def test_convert_says_which_activations_kept_their_true_gradient(
    net: nn.Module, image: torch.Tensor, tmp_path: Path
) -> None:
    model_file = tmp_path / "mobile.onnx"
    onnx.save(export_onnx(net, image), model_file)
    out = tmp_path / "out.onnx"
    guided = _convert(model_file, "-o", out, "--method", "guided")
    assert guided.returncode == 0, guided.stderr
    note = [line for line in guided.stdout.splitlines() if line.startswith("note:")]
    assert len(note) == 1, guided.stdout
    assert "1 Clip" in note[0] and "1 HardSwish" in note[0] and "--rectifiers all" in note[0]
    for quiet in (["--method", "guided", "--rectifiers", "all"], ["--method", "vanilla"]):
        result = _convert(model_file, "-o", out, *quiet)
        assert result.returncode == 0 and "note:" not in result.stdout, result.stdout
