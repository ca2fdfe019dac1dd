"""Imports pytorch-grad-cam (PyPI grad-cam 1.5.7), which imports torchvision at import time.

torchvision cannot be installed beside this torch; grad-cam's GradCAM and guided backprop
use none of it (only its image helpers and model targets name it), so the shared stub
(torchvision_stub.py) stands in for it.
"""

from __future__ import annotations

import types

from helpers.torchvision_stub import torchvision_module


def stub_torchvision() -> None:
    torchvision_module("transforms", "Compose", "Normalize", "ToTensor")
    torchvision_module("transforms.functional", "resize")


def pytorch_grad_cam() -> types.ModuleType:
    """The pytorch_grad_cam package, imported with torchvision stubbed."""
    stub_torchvision()
    import pytorch_grad_cam

    return pytorch_grad_cam
