"""The wire's generic method fields, shared by the server and the clients: a method's name
and its `Method` enum alias, and Python values to and from `ParamValue`.

A method's enum value is its name in capitals (METHOD_INPUT_X_GRADIENT: "input_x_gradient"),
so both ends follow the registry without naming a method; a method without an enum value
goes by `method_name` alone.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from .explain_pb2 import METHOD_UNSPECIFIED, Method, ParamValue
from .tensors import to_array, to_tensor

_INT64 = (-(2**63), 2**63)


def method_to_wire(name: str) -> Method:
    """The method's enum value; METHOD_UNSPECIFIED for one that has none."""
    values = Method.DESCRIPTOR.values_by_name
    enum = f"METHOD_{name.upper()}"
    return cast(Method, values[enum].number) if enum in values else METHOD_UNSPECIFIED


def method_from_wire(wire: int) -> str | None:
    """The method's name; None for METHOD_UNSPECIFIED, and an unknown number as text (for
    the one who reads it to refuse by name)."""
    if wire == METHOD_UNSPECIFIED:
        return None
    value = Method.DESCRIPTOR.values_by_number.get(wire)
    return str(wire) if value is None else value.name.removeprefix("METHOD_").lower()


def decode_value(name: str, value: ParamValue) -> Any:
    """int, float, str, bool or a numpy array; ValueError naming `name` when unset."""
    kind = value.WhichOneof("value")
    if kind is None:
        raise ValueError(f"parameter {name!r} has no value")
    if kind == "tensor_value":
        return to_array(value.tensor_value)
    return getattr(value, kind)


def encode_value(value: Any) -> ParamValue | None:
    """A value as the wire carries it; None for one it cannot (an int beyond int64)."""
    if isinstance(value, np.ndarray):
        return ParamValue(tensor_value=to_tensor(value))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return ParamValue(bool_value=value)
    if isinstance(value, int):
        return ParamValue(int_value=value) if _INT64[0] <= value < _INT64[1] else None
    if isinstance(value, float):
        return ParamValue(float_value=value)
    if isinstance(value, str):
        return ParamValue(string_value=value)
    raise ValueError(f"{value!r} is not an int, float, str, bool or numpy array")
