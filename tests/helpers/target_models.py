"""Tiny seeded models for the targets beyond a class: a segmenter ([N, 3, 16, 16] logits), a
YOLOv8-layout detector ([N, 4+3, 16]: cx, cy, w, h in input pixels, then class scores, over
a 4x4 grid of anchors on a 32x32 input), and a sequence recogniser ([N, 8, 5]: a CTC-like
output, one step per 4 input columns). Each is a PyTorch module (the float64 oracle) and its
ONNX export in a model folder with the config.toml a server reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from helpers.nets import export_onnx


class Segmenter(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class YoloV8Head(nn.Module):
    """A stride-8 backbone and a YOLOv8-style decoded head: box centres on the grid cell
    plus a sigmoid offset, sizes up to 16 pixels, sigmoid class scores."""

    def __init__(self, classes: int = 3, size: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 4 + classes, 1),
        )
        cells = size // 8
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys]).reshape(1, 2, -1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.body(x).flatten(2)  # [N, 4+C, anchors]
        centres = (self.grid + torch.sigmoid(raw[:, :2])) * 8
        sizes = torch.sigmoid(raw[:, 2:4]) * 16
        return torch.cat([centres, sizes, torch.sigmoid(raw[:, 4:])], dim=1)


class Recogniser(nn.Module):
    """Columns of a 16x32 image to 8 steps of 5 scores: [N, T, C]."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, classes, (16, 4), stride=(16, 4)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(2).transpose(1, 2)


def seeded(net: nn.Module, seed: int = 0, std: float = 0.4) -> nn.Module:
    torch.manual_seed(seed)
    for p in net.parameters():
        nn.init.normal_(p, std=std)
    return net.eval()


def write_model(
    folder: Path, net: nn.Module, example: torch.Tensor, config: str = ""
) -> onnx.ModelProto:
    """`net`'s export as folder/model.onnx, with `config` as its config.toml."""
    folder.mkdir(parents=True)
    model = export_onnx(net, example, softmax=False)
    onnx.save(model, folder / "model.onnx")
    (folder / "config.toml").write_text('output = "logits"\n' + config)
    return model


def images(shape: tuple[int, ...], seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)
