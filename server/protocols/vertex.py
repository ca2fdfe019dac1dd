"""Vertex AI's online `explain` on the `--http` port, for clients leaving Vertex AI:
`POST /v1/projects/{project}/locations/{location}/endpoints/{model}:explain`.

The path is Vertex's own, so that a client keeps its URL and changes only the host; the
endpoint is the onnxplain model's name, the project and location are not read. A request is
Vertex's `ExplainRequest` in JSON: `instances` (as KServe V1's: nested lists, or
`{"b64": ...}` images; instances.py), `parameters` (onnxplain's method and its parameters
by name, the place Vertex leaves to the model), and `explanationSpecOverride.parameters`:
`integratedGradientsAttribution.stepCount` (Integrated Gradients with that many steps),
`topK` and `outputIndices` (the classes explained). The answer is Vertex's
`ExplainResponse`: `explanations[i].attributions[]`, one per explained class, each with
`featureAttributions` (the saliency, the instance's shape), `outputIndex`,
`outputDisplayName`, `instanceOutputValue`, `outputName`, and for Integrated Gradients
`baselineOutputValue` and `approximationError`; plus `predictions`. What Vertex offers and
onnxplain does not (Sampled Shapley, XRAI, SmoothGrad over IG, blur baselines, metadata
overrides) is a 400 naming it. Errors are Google's JSON errors (`{"error": {"code",
"message", "status"}}`). docs/vertex.md maps every field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import numpy as np
from onnxplain.graph_rewrite.methods import REGISTRY

from ..core.errors import InvalidInput
from ..core.explainer import ExplainCall, Explainer, Explanation
from ..core.targets import MAX_TOP_K
from .http_answer import SERVING_STATUS_OF, HttpAnswer, Metered, error_answer, json_answer
from .instances import explain_instances
from .method_parameters import METHOD, method_request

PREFIX = "/v1/projects/"
_PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/endpoints/([^/:]+):([A-Za-z]+)$")
GAP = "completeness_gap"  # Integrated Gradients' Σ saliency − (f(x) − f(x'))
# Vertex's integratedGradientsAttribution is the registered method that reports a
# completeness gap (the path-integral method); found in the registry, not named here.
IG = next(name for name, spec in REGISTRY.items() if any(o.name == GAP for o in spec.outputs))

# The core's errors as HTTP statuses: the serving protocols' table (http_answer.py); the
# body is then recast as Google's error object (_google_error).
STATUS_OF = SERVING_STATUS_OF
_METERED = Metered("vertex", STATUS_OF)
# Google's canonical status names, which Vertex's clients read from an error's body.
_GOOGLE_STATUS = {
    HTTPStatus.BAD_REQUEST: "INVALID_ARGUMENT",
    HTTPStatus.NOT_FOUND: "NOT_FOUND",
    HTTPStatus.METHOD_NOT_ALLOWED: "UNIMPLEMENTED",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "INVALID_ARGUMENT",
    HTTPStatus.TOO_MANY_REQUESTS: "RESOURCE_EXHAUSTED",
    HTTPStatus.SERVICE_UNAVAILABLE: "UNAVAILABLE",
    HTTPStatus.GATEWAY_TIMEOUT: "DEADLINE_EXCEEDED",
    HTTPStatus.INTERNAL_SERVER_ERROR: "INTERNAL",
}
# ExplanationParameters' attribution methods that onnxplain does not offer, and why.
_NOT_OFFERED = {
    "sampledShapleyAttribution": "Sampled Shapley is not offered (onnxplain's methods are "
    "gradient methods run in the graph)",
    "xraiAttribution": "XRAI is not offered",
    "examples": "example-based explanations are not offered",
}


def handles(path: str) -> bool:
    return path.startswith(PREFIX)


def answer(core: Explainer, verb: str, path: str, body: bytes) -> HttpAnswer:
    match = _PATH.match(unquote(path))
    if match is None:
        return _google_error(
            error_answer(
                HTTPStatus.NOT_FOUND,
                f"no Vertex AI endpoint at {path}: use /v1/projects/{{project}}/locations/"
                "{location}/endpoints/{model}:explain",
            )
        )
    name, verb_name = match.group(3), match.group(4)
    if verb_name != "explain":
        return _google_error(
            error_answer(HTTPStatus.NOT_FOUND, f"no Vertex AI verb {verb_name!r}: use :explain")
        )
    if verb != "POST":
        return _google_error(error_answer(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST"))
    return _google_error(_METERED.answer(core, "Explain", name, lambda: _explain(core, name, body)))


def _google_error(answer: HttpAnswer) -> HttpAnswer:
    """An error answer's `{"error": message}` as Google's `{"error": {code, message, status}}`."""
    if answer.status < 400:
        return answer
    message = json.loads(answer.body)["error"]
    status = _GOOGLE_STATUS.get(answer.status, "UNKNOWN")
    payload = {"error": {"code": int(answer.status), "message": message, "status": status}}
    return HttpAnswer(answer.status, json.dumps(payload).encode(), headers=answer.headers)


def _camel(key: str) -> str:
    """proto3 JSON takes a field's lowerCamelCase name or its original snake_case one."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object")
    return {_camel(k): v for k, v in value.items()}


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number; got {value!r}")
    return value


def _explain(core: Explainer, name: str, body: bytes) -> tuple[HttpAnswer, str]:
    try:
        request = _object(json.loads(body), "the request")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the request is not JSON: {exc}") from None
    known = {"instances", "parameters", "explanationSpecOverride", "deployedModelId"}
    stray = sorted(set(request) - known)
    if stray:
        raise InvalidInput(f"unknown field {stray[0]!r}; an ExplainRequest has {sorted(known)}")
    instances = request.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list, one element per instance")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object of onnxplain's method parameters")
    override = _object(request.get("explanationSpecOverride"), "'explanationSpecOverride'")
    stray = sorted(set(override) - {"parameters"})
    if stray:
        raise InvalidInput(
            f"explanationSpecOverride.{stray[0]} is not offered: onnxplain reads only its "
            "'parameters'"
        )
    spec = _object(override.get("parameters"), "explanationSpecOverride.parameters")
    method_parameters = dict(parameters)
    _attribution_method(spec, method_parameters)
    indices, top_k = _classes(spec)
    method, params = method_request(method_parameters)
    call = ExplainCall(name, b"", method, params=params)
    if indices:  # one run per asked class, each row one (instance, class)
        calls = [dataclasses.replace(call, targets=(i,)) for i in indices]
    else:
        calls = [dataclasses.replace(call, top_k=top_k)]
    runs = [explain_instances(core, name, instances, c) for c in calls]
    model = core.repository.get(name)
    attributions: list[list[dict[str, Any]]] = [[] for _ in instances]
    predictions: list[Any] = [None] * len(instances)
    for results in runs:
        first = 0
        for result in results:
            for row in range(len(result.targets)):
                instance = first + int(result.samples[row])
                attributions[instance].append(_attribution(result, row, model.output.name))
            for sample, scores in enumerate(result.scores):
                predictions[first + sample] = scores.tolist()
            first += len(result.scores)
    payload: dict[str, Any] = {
        "explanations": [{"attributions": a} for a in attributions],
        "predictions": predictions,
    }
    if isinstance(request.get("deployedModelId"), str):
        payload["deployedModelId"] = request["deployedModelId"]
    return json_answer(payload), runs[0][0].method


def _attribution_method(spec: dict[str, Any], parameters: dict[str, Any]) -> None:
    """ExplanationParameters' method into onnxplain's `method` and parameters."""
    for field, why in _NOT_OFFERED.items():
        if field in spec:
            raise InvalidInput(f"explanationSpecOverride.parameters.{field}: {why}")
    stray = sorted(set(spec) - {"integratedGradientsAttribution", "topK", "outputIndices"})
    if stray:
        raise InvalidInput(f"unknown field explanationSpecOverride.parameters.{stray[0]}")
    if "integratedGradientsAttribution" not in spec:
        return
    what = "integratedGradientsAttribution"
    ig = _object(spec[what], what)
    for field in ("smoothGradConfig", "blurBaselineConfig"):
        if field in ig:
            raise InvalidInput(
                f"{what}.{field} is not offered: onnxplain's SmoothGrad is a method of its "
                "own (parameters.method, with its sample count and noise as parameters), and its "
                "blurred baseline is parameters.baseline 'blur'"
            )
    stray = sorted(set(ig) - {"stepCount"})
    if stray:
        raise InvalidInput(f"unknown field {what}.{stray[0]}")
    if parameters.get(METHOD, IG) != IG:
        raise InvalidInput(
            f"{what} asks for Integrated Gradients but parameters.method is "
            f"{parameters[METHOD]!r}: give one"
        )
    parameters[METHOD] = IG
    if "stepCount" in ig:
        parameters["steps"] = _whole(ig["stepCount"], f"{what}.stepCount")


def _classes(spec: dict[str, Any]) -> tuple[list[int], int]:
    """(outputIndices, or [] ; top_k, 0 for the top class alone). outputIndices, when
    given, decide, as on Vertex; topK 1 (Vertex's default) is the top class."""
    indices = spec.get("outputIndices")
    if indices is not None:
        if not isinstance(indices, list):
            raise InvalidInput("outputIndices must be a list of class indices")
        flat = [i for x in indices for i in (x if isinstance(x, list) else [x])]
        if not flat or not all(isinstance(i, int) and not isinstance(i, bool) for i in flat):
            raise InvalidInput("outputIndices must be a non-empty list of class indices")
        if len(flat) > MAX_TOP_K:
            raise InvalidInput(f"outputIndices has {len(flat)} classes; at most {MAX_TOP_K}")
        if any(i < 0 for i in flat):
            raise InvalidInput(f"outputIndices has {min(flat)}: a class index is >= 0")
        return list(dict.fromkeys(flat)), 0
    top_k = _whole(spec.get("topK", 1), "topK")
    if top_k == -1:
        raise InvalidInput(f"topK -1 (every output) is not offered: at most {MAX_TOP_K}")
    return [], 0 if top_k == 1 else top_k


def _attribution(result: Explanation, row: int, output_name: str) -> dict[str, Any]:
    """One Vertex Attribution: one (instance, class) of the explanation."""
    score = float(result.target_scores[row])
    item: dict[str, Any] = {
        "featureAttributions": result.saliency[row].tolist(),
        "outputIndex": [int(result.targets[row])],
        "instanceOutputValue": score,
        "outputName": output_name,
    }
    if result.labels:
        item["outputDisplayName"] = result.labels[row]
    gap = result.outputs.get(GAP)
    if isinstance(gap, np.ndarray):
        # Σ saliency − (f(x) − f(x')) = gap, so f(x') = f(x) − Σ saliency + gap; the error
        # is the gap relative to the difference the attributions should sum to.
        total = float(np.sum(result.saliency[row], dtype=np.float64))
        difference = total - float(gap[row])
        item["baselineOutputValue"] = score - difference
        item["approximationError"] = abs(float(gap[row])) / max(abs(difference), 1e-12)
    return item
