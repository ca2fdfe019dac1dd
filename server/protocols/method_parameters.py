"""Request parameters by name (the Open Inference Protocol's and KServe V1's) → the method
and its options, as the core takes them.

The one place where a name=value request says which saliency method to run and with what:
`method` names it, every other name is one of the method's parameters. Which names exist
and what type each takes is read from the method registry (`REGISTRY`, each method's
`params`) and from the core's `MethodOptions`, never listed here, so a method added to the
registry is served by every protocol that calls this. Tensor-valued options (a given
baseline, SmoothGrad-style noise) arrive as extra input tensors named like the option.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
from onnxplain.graph_rewrite.methods import REGISTRY

from ..core.errors import InvalidInput
from ..core.method_params import MethodOptions

METHOD = "method"  # the parameter that names the method
_HINTS = typing.get_type_hints(MethodOptions)
# Options that hold arrays travel as tensors, named without the field's "_tensor" suffix.
TENSOR_OPTIONS = {
    f.name.removesuffix("_tensor"): f.name
    for f in dataclasses.fields(MethodOptions)
    if _HINTS[f.name] == np.ndarray | None
}


def method_request(
    parameters: Mapping[str, Any], tensors: Mapping[str, np.ndarray] = {}
) -> tuple[str | None, MethodOptions]:
    """(method or None for the model's default, its options) from `parameters` (scalars:
    bool, int, float or str) and `tensors` (named as in TENSOR_OPTIONS).

    InvalidInput names a parameter no method has, or a value of the wrong type; whether
    the chosen method takes the parameter is the core's check (`graph_params`).
    """
    method = parameters.get(METHOD)
    if method is not None and not isinstance(method, str):
        raise InvalidInput(f"parameter {METHOD!r} must be a string naming the method")
    values: dict[str, Any] = {}
    for name, value in parameters.items():
        if name == METHOD:
            continue
        kind = _kind(name)
        if kind is None:
            raise InvalidInput(
                f"unknown parameter {name!r}; parameters: {METHOD}, {', '.join(_known())}"
            )
        values[name] = _convert(name, value, kind)
    for name, array in tensors.items():
        values[TENSOR_OPTIONS[name]] = array
    try:
        return method or None, MethodOptions(**values)
    except TypeError as exc:  # a registry parameter MethodOptions has no field for (yet)
        raise InvalidInput(f"this server cannot take that parameter: {exc}") from None


def _kind(name: str) -> type | None:
    """The parameter's scalar type: the registry's, else MethodOptions' annotation."""
    for spec in REGISTRY.values():
        for param in spec.params:
            if param.name == name:
                return param.type
    hint = _HINTS.get(name)
    if hint is None or name in TENSOR_OPTIONS.values():
        return None
    kinds = [k for k in typing.get_args(hint) or (hint,) if k is not type(None)]
    scalar = [k for k in kinds if k in (bool, int, float, str)]
    return scalar[0] if scalar else None


def _known() -> list[str]:
    names = {p.name for spec in REGISTRY.values() for p in spec.params}
    names |= {n for n in _HINTS if _kind(n) is not None}
    return sorted(names)


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
