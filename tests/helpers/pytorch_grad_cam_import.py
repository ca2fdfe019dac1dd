"""Imports pytorch-grad-cam (PyPI grad-cam 1.5.7), which imports torchvision at import time.

torchvision cannot be installed beside this torch; grad-cam's GradCAM and guided backprop
use none of it (only its image helpers and model targets name it). Stub modules that fail
loudly if reached stand in for it; oracle.py's torchvision stub (ops) is kept if present.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def _missing(*_: Any, **__: Any) -> Any:
    raise NotImplementedError(
        "torchvision is a stub in the tests (tests/helpers/pytorch_grad_cam_import.py)"
    )


def _module(name: str) -> types.ModuleType:
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so that submodules import
        sys.modules[name] = module
    return sys.modules[name]


def stub_torchvision() -> None:
    vision = _module("torchvision")
    transforms = _module("torchvision.transforms")
    functional = _module("torchvision.transforms.functional")
    vision.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    for name in ("Compose", "Normalize", "ToTensor"):
        if not hasattr(transforms, name):
            setattr(transforms, name, _missing)
    if not hasattr(functional, "resize"):
        functional.resize = _missing  # type: ignore[attr-defined]


def pytorch_grad_cam() -> types.ModuleType:
    """The pytorch_grad_cam package, imported with torchvision stubbed."""
    stub_torchvision()
    import pytorch_grad_cam

    return pytorch_grad_cam
