"""The page's method parameters: listed from the registry, and read from `param.NAME=VALUE`
query fields by the type the registry gives each one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxplain.graph_rewrite.methods import GRAPH, REGISTRY, Param, method_names

from ...core.errors import InvalidInput

PREFIX = "param."
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def listing() -> dict[str, list[dict[str, Any]]]:
    """Each method's parameters, as the page builds its controls from them."""
    return {name: [_describe(p) for p in REGISTRY[name].params] for name in method_names()}


def _describe(param: Param) -> dict[str, Any]:
    return {
        "name": param.name,
        "type": param.wire_type,
        "kind": "graph" if param.kind == GRAPH else "run_time",
        "default": param.default,
        "description": param.description,
        "choices": None if param.choices is None else [str(c) for c in param.choices],
    }


def from_query(query: Mapping[str, str], method: str | None) -> dict[str, Any]:
    """The `param.NAME` fields, each parsed by the method's own type for NAME (an empty
    one is not given); a name the method does not take passes as text, for the core to
    refuse by name."""
    spec = REGISTRY.get(method) if method else None
    params: dict[str, Any] = {}
    for key, text in query.items():
        if not key.startswith(PREFIX) or not text.strip():
            continue
        name = key.removeprefix(PREFIX)
        param = spec.param(name) if spec is not None else None
        params[name] = text if param is None else _parse(param, text.strip())
    return params


def _parse(param: Param, text: str) -> Any:
    kind = param.wire_type
    if kind == "tensor":
        raise InvalidInput(f"parameter {param.name!r} is a tensor; the page cannot send one")
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise InvalidInput(f"parameter {param.name!r} takes a {kind}; got {text!r}") from None
    if kind == "bool":
        if text.lower() not in (*_TRUE, *_FALSE):
            raise InvalidInput(f"parameter {param.name!r} takes true or false; got {text!r}")
        return text.lower() in _TRUE
    return text


def outputs_json(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """A method's outputs for the page: numbers and text as they are, arrays as lists."""
    shown: dict[str, Any] = {}
    for name, value in outputs.items():
        shown[name] = value.tolist() if hasattr(value, "tolist") else value
    return shown
