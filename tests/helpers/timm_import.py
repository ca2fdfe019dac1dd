"""Imports timm (PyPI timm, installed --no-deps) with torchvision stubbed.

timm imports torchvision at import time for its data transforms and a frozen BatchNorm
class, never to build or run the models here; PyPI's torchvision wheels pin another (CUDA)
torch. The shared stub (torchvision_stub.py) stands in: the names timm reads at import
time are classes (it tests `isinstance` against FrozenBatchNorm2d) or an enum
(InterpolationMode's members), and any of them fails loudly if it is ever instantiated.
"""

from __future__ import annotations

import enum
import types
from typing import Any

from helpers.torchvision_stub import torchvision_module


def _absent_class(qualified: str) -> type:
    def refuse(*_: Any, **__: Any) -> None:
        raise NotImplementedError(f"{qualified} is a stub in the tests (helpers/timm_import.py)")

    return type(qualified.rpartition(".")[2], (), {"__init__": refuse})


_MODES = enum.Enum(
    "InterpolationMode", "NEAREST NEAREST_EXACT BILINEAR BICUBIC BOX HAMMING LANCZOS"
)
# The stub submodules timm reads names from at import time (classes it subclasses or
# tests against, an enum, functions it binds).
_SUBMODULES = ("transforms", "transforms.functional", "datasets", "ops.misc", "utils")


def _permissive(module: types.ModuleType) -> None:
    """Any name of `module` resolves: InterpolationMode to an enum, others to a class that
    refuses to be instantiated (the shared stub's refusing functions become such classes,
    so that timm can subclass transforms.ToTensor whoever stubbed it first)."""
    prefix = module.__name__

    def resolve(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _MODES if name == "InterpolationMode" else _absent_class(f"{prefix}.{name}")
        setattr(module, name, value)
        return value

    for name, value in list(vars(module).items()):
        if getattr(value, "__module__", None) == "helpers.torchvision_stub":
            setattr(module, name, _absent_class(f"{prefix}.{name}"))
    module.__getattr__ = resolve  # type: ignore[method-assign]  # PEP 562


def stub_torchvision() -> None:
    for submodule in _SUBMODULES:
        _permissive(torchvision_module(submodule))


def timm() -> types.ModuleType:
    """The timm package, imported with torchvision stubbed."""
    stub_torchvision()
    import timm as package

    return package
