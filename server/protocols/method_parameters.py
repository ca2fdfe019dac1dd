"""Request parameters by name (the Open Inference Protocol's and KServe V1's) → the method
and its parameters, as the core takes them.

The one place where a name=value request says which saliency method to run and with what:
`method` names it, every other name is one of the method's parameters. Which names exist
and what type each takes is read from the method registry (each method's `params`), never
listed here, so a method added to the registry is served by every protocol that calls
this. Tensor parameters (a given baseline, SmoothGrad's noise) arrive as extra input
tensors named like the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from onnxplain.graph_rewrite.methods import REGISTRY, MethodSpec, Param, Tensor

from ..core.errors import InvalidInput

METHOD = "method"  # the parameter that names the method


def tensor_parameters() -> list[str]:
    """Every registered method's tensor parameters, by name: the optional inputs."""
    return sorted({p.name for spec in REGISTRY.values() for p in spec.params if _is_tensor(p)})


def method_request(
    parameters: Mapping[str, Any], tensors: Mapping[str, np.ndarray] | None = None
) -> tuple[str | None, dict[str, Any]]:
    """(method or None for the model's default, its parameters) from `parameters`
    (scalars: bool, int, float or str) and `tensors` (named as in tensor_parameters()).

    InvalidInput names a parameter no method has, or a value of the wrong type; whether
    the chosen method takes it, and the rest (choices, caps), is the core's check."""
    method = parameters.get(METHOD)
    if method is not None and not isinstance(method, str):
        raise InvalidInput(f"parameter {METHOD!r} must be a string naming the method")
    specs = list(REGISTRY.values())
    values: dict[str, Any] = {}
    for name, value in parameters.items():
        if name == METHOD:
            continue
        param = _param(name, specs)
        if param is None:
            known = ", ".join([METHOD, *_scalar_names(specs)])
            raise InvalidInput(f"unknown parameter {name!r}; parameters: {known}")
        if _is_tensor(param):
            raise InvalidInput(f"parameter {name!r} is a tensor: send it as an input named so")
        values[name] = _convert(name, value, param.type)
    values.update(tensors or {})
    return method or None, values


def _is_tensor(param: Param) -> bool:
    return param.type is Tensor


def _param(name: str, specs: list[MethodSpec]) -> Param | None:
    return next((p for spec in specs for p in spec.params if p.name == name), None)


def _scalar_names(specs: list[MethodSpec]) -> list[str]:
    return sorted({p.name for spec in specs for p in spec.params if not _is_tensor(p)})


def _convert(name: str, value: Any, kind: type) -> Any:
    """`value` as `kind`; a string of digits counts as a number (URL and JSON callers)."""
    if kind is str:
        if isinstance(value, str):
            return value
        raise InvalidInput(f"parameter {name!r} must be a string; got {value!r}")
    if isinstance(value, bool) and kind is not bool:
        raise InvalidInput(f"parameter {name!r} must be a number; got {value!r}")
    if kind is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise InvalidInput(f"parameter {name!r} must be a whole number; got {value!r}")
    if kind is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"parameter {name!r} must be a number; got {value!r}") from None
        if not math.isfinite(number):
            raise InvalidInput(f"parameter {name!r} must be finite; got {value!r}")
        return number
    if kind is bool and isinstance(value, bool):
        return value
    raise InvalidInput(f"parameter {name!r} must be a {kind.__name__}; got {value!r}")
