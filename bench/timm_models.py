"""timm's image models (random weights), imported with torchvision stubbed.

timm imports torchvision at import time (transforms, datasets, a frozen BatchNorm) but
creating and running its models needs none of it, and PyPI's torchvision wheels pin
another torch build, so timm is installed with --no-deps (scripts/test) and every
torchvision module is a stub here: a name used at import resolves to a class that fails
loudly when it is called.
"""

from __future__ import annotations

import enum
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

from torch import nn


class _StubModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package, so that any torchvision.x.y imports

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value: Any
        if name == "InterpolationMode":  # read at import time as an enum's members
            value = enum.Enum(name, "NEAREST NEAREST_EXACT BILINEAR BICUBIC BOX HAMMING LANCZOS")
        else:
            qualified = f"{self.__name__}.{name}"

            def missing(*_args: object, **_kwargs: object) -> None:
                raise NotImplementedError(f"{qualified} is a stub in bench/timm_models.py")

            value = type(name, (), {"__init__": missing})
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None) -> Any:
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StubModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def create(name: str) -> nn.Module:
    """timm.create_model(name) with random weights, in eval mode."""
    if not any(isinstance(f, _StubFinder) for f in sys.meta_path):
        if "torchvision" in sys.modules:
            raise RuntimeError("torchvision is already imported: timm_models cannot stub it")
        sys.meta_path.insert(0, _StubFinder())
    import timm

    return timm.create_model(name, pretrained=False).eval()
