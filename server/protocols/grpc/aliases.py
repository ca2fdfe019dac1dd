"""The released typed fields of the Explain messages, as aliases of the generic ones.

A request names its method by the `Method` enum or by `method_name`, and sets parameters
by the typed fields (layer, steps, ...) or by the `parameters` map: both ways end here as
one method name and one {parameter: value} dict. A response carries the method's outputs
in the `outputs` map and, where a released field exists, in that field too.

The method aliases follow the registry by a naming rule (onnxplain/v1/values.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1.tensors import to_array
from onnxplain.v1.values import decode_value, encode_value, method_from_wire, method_to_wire

from ...core.errors import InvalidInput

_INTEGRATIONS = {
    pb.INTEGRATION_GAUSS_LEGENDRE: "gausslegendre",
    pb.INTEGRATION_RIEMANN_TRAPEZOID: "riemann_trapezoid",
    pb.INTEGRATION_RIEMANN_LEFT: "riemann_left",
    pb.INTEGRATION_RIEMANN_RIGHT: "riemann_right",
    pb.INTEGRATION_RIEMANN_MIDDLE: "riemann_middle",
}
_CAM_STYLES = {pb.CAM_STYLE_CAPTUM: "captum", pb.CAM_STYLE_PYTORCH_GRAD_CAM: "pytorch-grad-cam"}
# Typed scalar fields that alias the parameter of the same name (set when present).
_OPTIONAL_FIELDS = ("steps", "samples", "sigma", "seed")
_UINT64 = (0, 2**64)


def request_method(request: pb.ExplainRequest) -> str | None:
    """The method a request names, by enum or by name; None: the model's default."""
    by_enum = method_from_wire(request.method)
    by_name = request.method_name or None
    if by_enum is not None and by_name is not None and by_enum != by_name:
        raise InvalidInput(
            f"method {by_enum!r} (the method field) and method_name {by_name!r} differ; "
            "name the method once"
        )
    return by_name or by_enum


def request_params(request: pb.ExplainRequest) -> dict[str, Any]:
    """The parameters a request gives, from its typed fields and its `parameters` map."""
    typed = _typed_params(request)
    try:
        generic = {name: decode_value(name, value) for name, value in request.parameters.items()}
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    for name in sorted(typed.keys() & generic.keys()):
        if not _same(typed[name], generic[name]):
            raise InvalidInput(
                f"parameter {name!r} is given twice, as a field and in parameters, with "
                "different values; give it once"
            )
    return {**typed, **generic}


def _typed_params(request: pb.ExplainRequest) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if request.layer:
        params["layer"] = request.layer
    for name in _OPTIONAL_FIELDS:
        if request.HasField(name):
            params[name] = getattr(request, name)
    if request.integration:
        params["integration"] = _INTEGRATIONS.get(request.integration, str(request.integration))
    if request.cam_style:
        params["cam_style"] = _CAM_STYLES.get(request.cam_style, str(request.cam_style))
    gradient = method_from_wire(request.gradient)
    if gradient is not None:
        params["gradient"] = gradient
    if request.HasField("noise"):
        params["noise"] = to_array(request.noise)
    kind = request.baseline.WhichOneof("kind") if request.HasField("baseline") else None
    if kind == "zeros":
        params["baseline"] = "zeros"
    elif kind == "constant":
        params["baseline"] = f"constant:{request.baseline.constant!r}"
    elif kind == "blur_sigma":
        params["baseline"] = f"blur:{request.baseline.blur_sigma!r}"
    elif kind == "tensor":
        params["baseline_tensor"] = to_array(request.baseline.tensor)
    return params


def set_outputs(response: pb.ExplainResponse, outputs: Mapping[str, Any]) -> None:
    """The method's outputs into the `outputs` map and into their released fields."""
    for name, value in outputs.items():
        if value is None:
            continue
        encoded = encode_value(value)  # None: an int beyond int64 (a seed), in its field
        if encoded is not None:
            response.outputs[name].CopyFrom(encoded)
    gap = outputs.get("completeness_gap")
    if isinstance(gap, np.ndarray):
        response.completeness_gap[:] = gap.astype(np.float32).reshape(-1).tolist()
    seed = outputs.get("seed")
    if isinstance(seed, int) and _UINT64[0] <= seed < _UINT64[1]:
        response.seed = seed
    layer = outputs.get("layer")
    if isinstance(layer, str):
        response.layer = layer


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    return bool(a == b)


__all__ = ["method_from_wire", "method_to_wire", "request_method", "request_params", "set_outputs"]
