"""KServe's V1 protocol on the `--http` port: `POST /v1/models/{name}:explain` (the verb
KServe sends to an InferenceService's explainer) and `:predict`, plus the model list and
readiness.

A request is `{"instances": [...], "parameters": {...}}`: each instance is one sample as a
nested list (the model's input without its batch dimension), or `{"b64": "<PNG or JPEG>"}`
for a model with image preprocessing. The parameters name the method and its parameters
(as the Open Inference Protocol's do), and `target` (one class for all), `top_k` and
`heatmap` (true: a PNG per explanation). `:explain` answers one explanation per instance
and explained class: `{"explanations": [{"instance", "target", "label", "score",
"probability", "saliency", ...}]}`; `:predict` answers the scores, `{"predictions": [...]}`
(run through the explain queue: the V1 verbs share one model, its limits and its queue).
"""

from __future__ import annotations

import base64
import json
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import numpy as np

from ..core.errors import InvalidInput
from ..core.explainer import ExplainCall, Explainer, Explanation
from ..store.repository import FailedModel
from .http_answer import SERVING_STATUS_OF, HttpAnswer, Metered, error_answer, json_answer
from .instances import explain_instances
from .method_parameters import method_request

PREFIX = "/v1/models"
# Parameters about the answer rather than the method.
TARGET, TOP_K, HEATMAP = "target", "top_k", "heatmap"

# The serving protocols' HTTP statuses for the core's errors (http_answer.py).
STATUS_OF = SERVING_STATUS_OF
_METERED = Metered("kserve-v1", STATUS_OF)


def handles(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def answer(core: Explainer, verb: str, path: str, body: bytes) -> HttpAnswer:
    rest = unquote(path.removeprefix(PREFIX).strip("/"))
    if not rest:
        if verb != "GET":
            return error_answer(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET")
        return _METERED.answer(core, "ListModels", "", lambda: (_list(core), ""))
    name, _, action = rest.partition(":")
    if action == "":
        if verb != "GET":
            return error_answer(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET")
        return _METERED.answer(core, "ModelReady", name, lambda: (_ready(core, name), ""))
    if action not in ("predict", "explain"):
        return error_answer(HTTPStatus.NOT_FOUND, f"no V1 verb {action!r}: use :predict, :explain")
    if verb != "POST":
        return error_answer(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST")
    if action == "predict":
        return _METERED.answer(core, "Predict", name, lambda: _predict(core, name, body))
    return _METERED.answer(core, "Explain", name, lambda: _explain(core, name, body))


def _list(core: Explainer) -> HttpAnswer:
    return json_answer({"models": core.repository.names()})


def _ready(core: Explainer, name: str) -> HttpAnswer:
    ready = not isinstance(core.repository.entry(name), FailedModel)
    status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
    return json_answer({"name": name, "ready": ready}, status)


def _request(body: bytes) -> tuple[list[Any], dict[str, Any]]:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("instances"), list):
        raise InvalidInput('the request must be {"instances": [...], "parameters": {...}}')
    instances = request["instances"]
    if not instances:
        raise InvalidInput("'instances' is empty: give at least one")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object of names to values")
    return instances, dict(parameters)


def _predict(core: Explainer, name: str, body: bytes) -> tuple[HttpAnswer, str]:
    instances, parameters = _request(body)
    method, params = method_request(parameters)
    call = ExplainCall(name, b"", method, params=params)
    results = explain_instances(core, name, instances, call)
    scores = np.concatenate([r.scores for r in results])
    return json_answer({"predictions": scores.tolist()}), results[0].method


def _explain(core: Explainer, name: str, body: bytes) -> tuple[HttpAnswer, str]:
    instances, parameters = _request(body)
    target = parameters.pop(TARGET, None)
    top_k = parameters.pop(TOP_K, 0)
    heatmap = parameters.pop(HEATMAP, False)
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
        raise InvalidInput(f"parameter {TARGET!r} must be a class index; got {target!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise InvalidInput(f"parameter {TOP_K!r} must be a whole number; got {top_k!r}")
    if not isinstance(heatmap, bool):
        raise InvalidInput(f"parameter {HEATMAP!r} must be true or false; got {heatmap!r}")
    method, params = method_request(parameters)
    call = ExplainCall(
        name,
        b"",
        method,
        targets=() if target is None else (target,),
        heatmap=heatmap,
        top_k=top_k,
        params=params,
    )
    results = explain_instances(core, name, instances, call)
    explanations, first = [], 0
    for result in results:
        for row in range(len(result.targets)):
            explanations.append(_row(result, row, first))
        first += len(result.scores)
    payload = {"method": results[0].method, **_scalars(results[0]), "explanations": explanations}
    return json_answer(payload), results[0].method


def _scalars(result: Explanation) -> dict[str, Any]:
    """A method's own scalar extras that are set (SmoothGrad's seed, Grad-CAM's layer)."""
    return {
        k: v for k, v in result.outputs.items() if isinstance(v, (int, str)) and v not in ("", None)
    }


def _row(result: Explanation, row: int, first: int) -> dict[str, Any]:
    """One explained (instance, class)."""
    item: dict[str, Any] = {
        "instance": first + int(result.samples[row]),
        "target": int(result.targets[row]),
        "label": result.labels[row] if result.labels else None,
        "score": float(result.target_scores[row]),
        "probability": float(result.probabilities[row]),
        "saliency": result.saliency[row].tolist(),
    }
    if result.heatmaps_png:
        item["heatmap_png"] = base64.b64encode(result.heatmaps_png[row]).decode("ascii")
    for name, value in result.outputs.items():  # a method's own per-row values
        if isinstance(value, np.ndarray):
            item[name] = value[row].item()
    return item
