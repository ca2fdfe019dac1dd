"""One stand-in for torchvision, shared by every test that imports a package needing it.

torchvision cannot be installed beside this torch (PyPI's wheel pins another, CUDA, torch),
but onnx2torch imports `torchvision.ops` and pytorch-grad-cam imports
`torchvision.transforms` at import time, and use neither on the models here. Each caller
asks for the submodules and names it needs; they are added to one stub package, so the
order in which tests import those packages does not matter (two separate stubs used to
shadow each other: onnx2torch failed on `torchvision.ops` after pytorch-grad-cam's stub).
A stubbed name fails loudly if it is ever called.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def _missing(*_: Any, **__: Any) -> Any:
    raise NotImplementedError(
        "torchvision is a stub in the tests (tests/helpers/torchvision_stub.py)"
    )


def _package(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so that its submodules import
        sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(_package(parent), child, module)
    return module


def torchvision_module(submodule: str = "", *names: str) -> types.ModuleType:
    """`torchvision[.submodule]`, stubbed, with each of `names` present (a real attribute
    set earlier is kept)."""
    module = _package("torchvision" + (f".{submodule}" if submodule else ""))
    for name in names:
        if not hasattr(module, name):
            setattr(module, name, _missing)
    return module
