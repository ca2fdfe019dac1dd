"""The Open Inference Protocol over REST, on the `--http` port: health, metadata, readiness
and `POST /v2/models/{name}/infer`, in JSON and in the binary tensor extension that
tritonclient's HTTP client speaks (a JSON header of `Inference-Header-Content-Length`
bytes, then each binary tensor's bytes in order).

Plain functions from (verb, path, headers, body) to an `HttpAnswer`; `web/httpd.py` routes
here, checks tokens and reads the body first. Errors are the core's, mapped by STATUS_OF.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import numpy as np

from ...core.errors import InvalidInput
from ...core.explainer import Explainer
from ..http_answer import SERVING_STATUS_OF, HttpAnswer, Metered, error_answer, json_answer
from . import model
from .datatypes import datatype_of, from_raw, from_values, to_raw

PREFIX = "/v2"
# Liveness and readiness say only whether the server is up: open, as grpc.health.v1 is,
# for probes that carry no token. Everything else needs one when tokens are set.
OPEN_PATHS = frozenset(("/v2/health/live", "/v2/health/ready"))
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]

# The serving protocols' HTTP statuses for the core's errors (http_answer.py).
STATUS_OF = SERVING_STATUS_OF
_METERED = Metered("oip-rest", STATUS_OF)


def handles(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def answer(
    core: Explainer, verb: str, path: str, headers: Mapping[str, str], body: bytes
) -> HttpAnswer:
    """The answer to one request; `headers` with lower-case names."""
    parts = [unquote(p) for p in path.removeprefix(PREFIX).strip("/").split("/") if p]
    routed = _route(core, parts, headers, body)
    if routed is None:
        return error_answer(HTTPStatus.NOT_FOUND, f"no Open Inference Protocol endpoint at {path}")
    wanted_verb, rpc, name, work = routed
    if verb != wanted_verb:
        return error_answer(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes {wanted_verb}")
    return _METERED.answer(core, rpc, name, work)


Work = Callable[[], tuple[HttpAnswer, str]]


def _route(
    core: Explainer, parts: list[str], headers: Mapping[str, str], body: bytes
) -> tuple[str, str, str, Work] | None:
    """(verb, rpc, model name, work) of the endpoint at `parts`, or None where none is."""
    if not parts:
        return "GET", "ServerMetadata", "", lambda: (_server_metadata(), "")
    if parts == ["health", "live"]:
        return "GET", "ServerLive", "", lambda: (json_answer({"live": True}), "")
    if parts == ["health", "ready"]:
        return "GET", "ServerReady", "", lambda: (_ready(model.server_ready(core), {}), "")
    if len(parts) < 2 or parts[0] != "models":
        return None
    name, rest, version = parts[1], parts[2:], ""
    if rest[:1] == ["versions"] and len(rest) >= 2:
        version, rest = rest[1], rest[2:]
    if not rest:
        return "GET", "ModelMetadata", name, lambda: (_metadata(core, name, version), "")
    if rest == ["ready"]:
        ready = lambda: _ready(model.model_ready(core, name, version), {"name": name})  # noqa: E731
        return "GET", "ModelReady", name, lambda: (ready(), "")
    if rest == ["infer"]:
        return "POST", "ModelInfer", name, lambda: _infer(core, name, version, headers, body)
    return None


def _ready(ready: bool, about: dict[str, Any]) -> HttpAnswer:
    """200 when ready, 503 when not: clients (tritonclient) read the status alone."""
    status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
    return json_answer({**about, "ready": ready}, status)


def _server_metadata() -> HttpAnswer:
    return json_answer(
        {"name": model.SERVER_NAME, "version": model.server_version(), "extensions": EXTENSIONS}
    )


def _metadata(core: Explainer, name: str, version: str) -> HttpAnswer:
    meta = model.model_metadata(core, name, version)

    def tensors(items: list[model.TensorMetadata]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in items]

    return json_answer(
        {
            "name": meta.name,
            "versions": meta.versions,
            "platform": meta.platform,
            "inputs": tensors(meta.inputs),
            "outputs": tensors(meta.outputs),
            "properties": meta.properties,
        }
    )


def _infer(
    core: Explainer, name: str, version: str, headers: Mapping[str, str], body: bytes
) -> tuple[HttpAnswer, str]:
    model.loaded(core, name, version)  # an unknown model is named as such, whatever the body
    request, binary = _split(headers, body)
    inputs = _inputs(request, binary)
    parameters = _parameters(request.get("parameters"), "the request's parameters")
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInput("'outputs' must be a list of objects, each with a 'name'")
    wanted = [str(o.get("name", "")) for o in outputs]
    binary_default = parameters.get("binary_data_output") is True
    binary_of = {
        str(o.get("name", "")): _parameters(o.get("parameters"), "an output's parameters").get(
            "binary_data", binary_default
        )
        for o in outputs
    }
    result = model.infer(core, name, version, inputs, parameters, wanted)
    header: dict[str, Any] = {
        "model_name": result.model_name,
        "model_version": model.VERSION,
        "parameters": result.parameters,
        "outputs": [],
    }
    if isinstance(request.get("id"), str) and request["id"]:
        header["id"] = request["id"]
    blobs = []
    for out_name, array in result.outputs:
        entry: dict[str, Any] = {
            "name": out_name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if binary_of.get(out_name, binary_default) is True:
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = np.asarray(array).reshape(-1).tolist()
        header["outputs"].append(entry)
    text = json.dumps(header).encode()
    if not blobs:
        return HttpAnswer(HTTPStatus.OK, text), result.method
    return (
        HttpAnswer(
            HTTPStatus.OK,
            b"".join([text, *blobs]),
            "application/octet-stream",
            {"Inference-Header-Content-Length": str(len(text))},
        ),
        result.method,
    )


def _split(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON request and the binary data after it."""
    length = headers.get(HEADER_LENGTH)
    if length is None:
        text, binary = body, b""
    else:
        if not length.strip().isdigit() or int(length) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {length!r}; it must be the JSON header's "
                f"size in bytes, at most the body's {len(body)}"
            )
        text, binary = body[: int(length)], body[int(length) :]
    try:
        request = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidInput("the request must be a JSON object with 'inputs'")
    return request, binary


def _inputs(request: dict[str, Any], binary: bytes) -> dict[str, np.ndarray]:
    items = request.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidInput("the request needs 'inputs': a list of tensors")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        if not isinstance(item, dict):
            raise InvalidInput("each input must be an object with name, datatype, shape, data")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        what = f"input {name!r}"
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInput(f"{what}: 'name' and 'datatype' must be strings")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise InvalidInput(f"{what}: 'shape' must be a list of whole numbers")
        if name in arrays:
            raise InvalidInput(f"{what} is given twice")
        size = _parameters(item.get("parameters"), f"{what}'s parameters").get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise InvalidInput(f"{what} has neither 'data' nor binary_data_size")
            arrays[name] = from_values(item["data"], datatype, shape, what)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{what}: binary_data_size must be a whole number of bytes")
        if offset + size > len(binary):
            raise InvalidInput(
                f"{what} has binary_data_size {size}, but only {len(binary) - offset} bytes "
                "of binary data are left"
            )
        arrays[name] = from_raw(binary[offset : offset + size], datatype, shape, what)
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    return arrays


def _parameters(given: Any, what: str) -> dict[str, Any]:
    """A parameters object: names to scalars (bool, number or string)."""
    if given is None:
        return {}
    if not isinstance(given, dict) or not all(
        isinstance(v, (bool, int, float, str)) for v in given.values()
    ):
        raise InvalidInput(f"{what} must be an object of names to booleans, numbers or strings")
    return given
