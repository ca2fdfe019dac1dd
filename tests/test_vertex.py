"""Vertex AI's `explain` on the --http port (server/protocols/vertex.py).

The oracles: the Explain RPC's answer for the same input and parameters, and the demo
model's explain model run straight in onnxruntime (`direct_explain`).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnxplain.server.ops import metrics
from onnxplain.server.ops.security import Security

from onnxplain.v1 import explain_pb2, explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.oip_support import Ports, serving
from helpers.server_support import SAMPLES, direct_explain, make_repository

X = np.concatenate([np.load(SAMPLES / "digit7.npy"), np.load(SAMPLES / "digit3.npy")])
ROUTE = "/v1/projects/p/locations/europe-west4/endpoints/digits:explain"
IG_FIELD = "integratedGradientsAttribution"


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    with serving(make_repository(tmp_path_factory.mktemp("models"))) as running:
        yield running


def post(ports: Ports, payload: Any, route: str = ROUTE) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(ports.http_url + route, data=body)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def explain_rpc(ports: Ports, **fields: Any) -> explain_pb2.ExplainResponse:
    with grpc.insecure_channel(ports.grpc_address) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        return stub.Explain(explain_pb2.ExplainRequest(model="digits", **fields), timeout=60)


def test_default_explanation_is_the_explain_rpcs(ports: Ports) -> None:
    status, answer = post(ports, {"instances": X.tolist(), "parameters": {"method": "guided"}})
    assert status == 200, answer
    native = explain_rpc(ports, tensor=to_tensor(X), method=explain_pb2.METHOD_GUIDED)
    expected, scores, targets = direct_explain("guided", X)
    rows = [e["attributions"] for e in answer["explanations"]]
    assert [len(r) for r in rows] == [1, 1]
    got = np.array([r[0]["featureAttributions"] for r in rows], np.float32)
    np.testing.assert_array_equal(got, to_array(native.saliency))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [r[0]["outputIndex"] for r in rows] == [[int(t)] for t in targets]
    assert [r[0]["outputDisplayName"] for r in rows] == [str(t) for t in targets]
    assert all(r[0]["outputName"] == "logits" for r in rows)
    np.testing.assert_allclose(
        [r[0]["instanceOutputValue"] for r in rows], scores[[0, 1], targets], rtol=1e-5
    )
    np.testing.assert_allclose(answer["predictions"], scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spelling", ["camel", "snake"])
def test_integrated_gradients_step_count_is_honoured(ports: Ports, spelling: str) -> None:
    """proto3 JSON's two spellings of a field: lowerCamelCase and the proto's snake_case."""
    if spelling == "camel":
        override = {"explanationSpecOverride": {"parameters": {IG_FIELD: {"stepCount": 4}}}}
    else:
        ig = {"integrated_gradients_attribution": {"step_count": 4}}
        override = {"explanation_spec_override": {"parameters": ig}}
    status, answer = post(ports, {"instances": X.tolist(), **override})
    assert status == 200, answer
    got = np.array(
        [e["attributions"][0]["featureAttributions"] for e in answer["explanations"]], np.float32
    )
    ig_rpc = explain_pb2.METHOD_INTEGRATED_GRADIENTS
    four = explain_rpc(ports, tensor=to_tensor(X), method=ig_rpc, steps=4)
    sixteen = explain_rpc(ports, tensor=to_tensor(X), method=ig_rpc, steps=16)
    np.testing.assert_array_equal(got, to_array(four.saliency))
    assert not np.allclose(got, to_array(sixteen.saliency), rtol=1e-4, atol=1e-5)
    # The baseline's output from the completeness gap: f(x') = f(x) - sum(saliency) + gap.
    for row, explanation in enumerate(answer["explanations"]):
        (attribution,) = explanation["attributions"]
        total = float(got[row].sum(dtype=np.float64))
        expected = attribution["instanceOutputValue"] - total + four.completeness_gap[row]
        assert attribution["baselineOutputValue"] == pytest.approx(expected, rel=1e-5, abs=1e-5)
        difference = total - four.completeness_gap[row]
        assert attribution["approximationError"] == pytest.approx(
            abs(four.completeness_gap[row]) / abs(difference), rel=1e-4
        )


def test_top_k_and_output_indices(ports: Ports) -> None:
    png = (SAMPLES / "digit5.png").read_bytes()
    instance = {"b64": base64.b64encode(png).decode()}
    spec = {"parameters": {"topK": 3}}
    status, answer = post(
        ports,
        {"instances": [instance], "parameters": {"method": "vanilla"},
         "explanationSpecOverride": spec},
    )  # fmt: skip
    assert status == 200, answer
    (explanation,) = answer["explanations"]
    native = explain_rpc(ports, image=png, method=explain_pb2.METHOD_VANILLA, top_k=3)
    assert [a["outputIndex"] for a in explanation["attributions"]] == [[t] for t in native.targets]
    got = np.array([a["featureAttributions"] for a in explanation["attributions"]], np.float32)
    np.testing.assert_array_equal(got, to_array(native.saliency))

    status, answer = post(
        ports,
        {"instances": X.tolist(), "parameters": {"method": "vanilla"},
         "explanationSpecOverride": {"parameters": {"outputIndices": [2, 9], "topK": 5}}},
    )  # fmt: skip
    assert status == 200, answer
    for row, explanation in enumerate(answer["explanations"]):
        assert [a["outputIndex"] for a in explanation["attributions"]] == [[2], [9]]
        for attribution, target in zip(explanation["attributions"], (2, 9), strict=True):
            expected, _, _ = direct_explain("vanilla", X[row : row + 1], np.array([target]))
            np.testing.assert_allclose(
                np.array(attribution["featureAttributions"], np.float32)[None],
                expected,
                rtol=1e-5,
                atol=1e-6,
            )


def spec(**parameters: Any) -> dict[str, Any]:
    return {"instances": X.tolist(), "explanationSpecOverride": {"parameters": parameters}}


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (b"not json", 400, "not JSON"),
        ({"instances": []}, 400, "'instances'"),
        ({"instances": X.tolist(), "bogus": 1}, 400, "unknown field 'bogus'"),
        (spec(xraiAttribution={"stepCount": 4}), 400, "XRAI is not offered"),
        (spec(sampledShapleyAttribution={"pathCount": 4}), 400, "Sampled Shapley"),
        (spec(**{IG_FIELD: {"stepCount": "many"}}), 400, "stepCount must be a whole number"),
        (spec(**{IG_FIELD: {"stepCount": 0}}), 400, "steps"),
        (spec(**{IG_FIELD: {"smoothGradConfig": {"noisySampleCount": 3}}}), 400,
         "smoothGradConfig is not offered"),
        ({**spec(**{IG_FIELD: {}}), "parameters": {"method": "guided"}}, 400, "give one"),
        (spec(topK=-1), 400, "topK -1"),
        (spec(topK=50), 400, "top_k is 50"),
        (spec(outputIndices=[99]), 400, "out of range"),
        (spec(outputIndices="2"), 400, "outputIndices must be a list"),
        ({"instances": [{"b64": "%%%"}]}, 400, "base64"),
        ({"instances": [{"b64": "iVBO"}] * 17}, 400, "at most 16 per request"),
        ({"instances": X.tolist(), "parameters": {"method": "nope"}}, 400, "unknown method"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_with_googles_error_body(
    ports: Ports, payload: Any, status: int, words: str
) -> None:
    got, answer = post(ports, payload)
    assert got == status, answer
    error = answer["error"]
    assert error["code"] == status and error["status"] == "INVALID_ARGUMENT"
    assert words in error["message"], error["message"]


def test_unknown_endpoints_and_verbs_are_404(ports: Ports) -> None:
    got, answer = post(ports, {"instances": X.tolist()}, ROUTE.replace("digits", "nope"))
    assert got == 404 and answer["error"]["status"] == "NOT_FOUND"
    got, answer = post(ports, {"instances": X.tolist()}, ROUTE.replace(":explain", ":predict"))
    assert got == 404 and ":explain" in answer["error"]["message"]
    got, answer = post(ports, {"instances": X.tolist()}, "/v1/projects/p/elsewhere")
    assert got == 404 and "endpoints/{model}:explain" in answer["error"]["message"]


def test_tokens_guard_the_endpoint(tmp_path: Path) -> None:
    with serving(make_repository(tmp_path), Security(tokens=(b"s3cret",))) as running:
        body = json.dumps({"instances": X.tolist()}).encode()
        refused = urllib.request.Request(running.http_url + ROUTE, data=body)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(refused, timeout=60)
        assert error.value.code == 401
        token = {"Authorization": "Bearer s3cret"}
        allowed = urllib.request.Request(running.http_url + ROUTE, data=body, headers=token)
        with urllib.request.urlopen(allowed, timeout=60) as answer:
            assert answer.status == 200


def test_metrics_count_under_the_vertex_protocol(ports: Ports) -> None:
    registry = metrics.enable()
    labels = {"protocol": "vertex", "rpc": "Explain", "model": "digits", "method": "vanilla"}

    def count(code: str, method: str = "vanilla") -> float:
        value = registry.get_sample_value(
            "onnxplain_requests_total", {**labels, "method": method, "code": code}
        )
        return value or 0.0

    before_ok, before_bad = count("OK"), count("INVALID_ARGUMENT", "")
    assert post(ports, {"instances": X.tolist(), "parameters": {"method": "vanilla"}})[0] == 200
    bad = {"instances": X.tolist(), "parameters": {"method": "vanilla", "steps": "x"}}
    assert post(ports, bad)[0] == 400
    assert count("OK") == before_ok + 1
    # A refused request has no method label (refused before a method ran), gRPC's code.
    assert count("INVALID_ARGUMENT", "") == before_bad + 1
