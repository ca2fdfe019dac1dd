"""The saliency methods, one file each, and the registry that lists them.

A new method is one module with a `METHOD = MethodSpec(...)` (base.py says what it holds)
added to `_MODULES`, plus its tests.
"""

from __future__ import annotations

from ..errors import RewriteError
from ..rules.rectifiers import RECTIFIER_CHOICES, Rectifiers
from . import (
    deconvnet,
    gradcam,
    guided,
    guided_gradcam,
    input_x_gradient,
    integrated_gradients,
    smoothgrad,
    vanilla,
)
from .base import Context, MethodSpec, Param

_MODULES = (
    vanilla,
    deconvnet,
    guided,
    gradcam,
    guided_gradcam,
    input_x_gradient,
    smoothgrad,
    integrated_gradients,
)

REGISTRY: dict[str, MethodSpec] = {m.METHOD.name: m.METHOD for m in _MODULES}

# A method's name. Plain str: the registry, not the type, says which exist.
Method = str

# Every method the rewrite pass builds, in the registry's order.
ALL_METHODS: tuple[Method, ...] = tuple(REGISTRY)

# The three gradient-at-the-input methods of 2014, which need no parameter and build on
# any model with a path from input to output: the service serves these today, and
# `check` runs them when no method is named.
METHODS: tuple[Method, ...] = ("vanilla", "deconvnet", "guided")


def method_spec(name: str) -> MethodSpec:
    """The registered method `name`; ValueError naming the choices when there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; choose one of {', '.join(ALL_METHODS)}"
        ) from None


__all__ = [
    "ALL_METHODS",
    "METHODS",
    "RECTIFIER_CHOICES",
    "REGISTRY",
    "Context",
    "Method",
    "MethodSpec",
    "Param",
    "Rectifiers",
    "RewriteError",
    "method_spec",
]
