"""The saliency methods, one file each, and the registry that lists them.

A new method is one module with a `METHOD = MethodSpec(...)` (base.py says what it holds)
added to `_MODULES`, plus its tests. Everything else (the rewrite CLI, the service, the
clients, the web page) reads the registry; `register` adds a method at run time (tests).
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
from .base import (
    GRAPH,
    RUN_TIME,
    Context,
    MethodSpec,
    Output,
    Param,
    ParamKind,
    RunFeeds,
    Tensor,
)

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

# A model's method when its config.toml names none.
DEFAULT_METHOD: Method = "guided"


def register(spec: MethodSpec) -> MethodSpec:
    """Adds `spec` to the registry (a method defined outside this package, e.g. in a
    test); every layer that reads the registry serves it from then on."""
    if spec.name in REGISTRY:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes a method `register` added; the built-in ones stay."""
    if name in ALL_METHODS:
        raise ValueError(f"{name!r} is a built-in method; it cannot be removed")
    REGISTRY.pop(name, None)


def method_names() -> tuple[Method, ...]:
    """Every registered method now, built-in ones first, in the registry's order."""
    return tuple(REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The registered method `name`; ValueError naming the choices when there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}") from None


__all__ = [
    "ALL_METHODS",
    "DEFAULT_METHOD",
    "GRAPH",
    "METHODS",
    "RECTIFIER_CHOICES",
    "REGISTRY",
    "RUN_TIME",
    "Context",
    "Method",
    "MethodSpec",
    "Output",
    "Param",
    "ParamKind",
    "Rectifiers",
    "RewriteError",
    "RunFeeds",
    "Tensor",
    "method_names",
    "method_spec",
    "register",
    "unregister",
]
