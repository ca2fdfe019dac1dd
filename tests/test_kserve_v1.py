"""KServe's V1 protocol on the `--http` port: `:explain` (what KServe sends an explainer)
and `:predict`, with plain urllib as a KServe router would call them.

The oracles: the Explain RPC's answer for the same input (tensor or image), and the demo
model's explain model run straight in onnxruntime (`direct_explain`).
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnxplain.server.ops.security import Security
from PIL import Image

from onnxplain.v1 import explain_pb2, explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.oip_support import Ports, serving
from helpers.server_support import SAMPLES, direct_explain, make_repository

X = np.concatenate([np.load(SAMPLES / "digit7.npy"), np.load(SAMPLES / "digit3.npy")])


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    with serving(make_repository(tmp_path_factory.mktemp("models"))) as running:
        yield running


def post(url: str, payload: Any, **headers: str) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def explain_rpc(ports: Ports, **fields: Any) -> explain_pb2.ExplainResponse:
    with grpc.insecure_channel(ports.grpc_address) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        return stub.Explain(explain_pb2.ExplainRequest(model="digits", **fields), timeout=60)


def test_explain_instances_give_the_explain_rpcs_saliency(ports: Ports) -> None:
    status, answer = post(
        f"{ports.http_url}/v1/models/digits:explain",
        {"instances": X.tolist(), "parameters": {"method": "guided"}},
    )
    assert status == 200, answer
    assert answer["method"] == "guided"
    rows = answer["explanations"]
    native = explain_rpc(ports, tensor=to_tensor(X), method=explain_pb2.METHOD_GUIDED)
    expected, scores, targets = direct_explain("guided", X)
    assert [r["instance"] for r in rows] == [0, 1]
    assert [r["target"] for r in rows] == targets.tolist() == list(native.targets)
    assert [r["label"] for r in rows] == [str(t) for t in targets]
    saliency = np.array([r["saliency"] for r in rows], np.float32)
    np.testing.assert_array_equal(saliency, to_array(native.saliency))
    np.testing.assert_allclose(saliency, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        [r["score"] for r in rows], scores[[0, 1], targets], rtol=1e-5, atol=1e-6
    )


def test_explain_b64_images_with_top_k_and_heatmaps(ports: Ports) -> None:
    images = [(SAMPLES / f"digit{d}.png").read_bytes() for d in (0, 5)]
    status, answer = post(
        f"{ports.http_url}/v1/models/digits:explain",
        {
            "instances": [{"b64": base64.b64encode(i).decode()} for i in images],
            "parameters": {"method": "vanilla", "top_k": 2, "heatmap": True},
        },
    )
    assert status == 200, answer
    rows = answer["explanations"]
    assert [r["instance"] for r in rows] == [0, 0, 1, 1]
    for instance, image in enumerate(images):
        native = explain_rpc(ports, image=image, method=explain_pb2.METHOD_VANILLA, top_k=2)
        mine = [r for r in rows if r["instance"] == instance]
        assert [r["target"] for r in mine] == list(native.targets)
        np.testing.assert_array_equal(
            np.array([r["saliency"] for r in mine], np.float32), to_array(native.saliency)
        )
        np.testing.assert_allclose(
            [r["probability"] for r in mine], native.target_probabilities, rtol=1e-6
        )
    png = Image.open(io.BytesIO(base64.b64decode(rows[0]["heatmap_png"])))
    assert png.format == "PNG" and png.size[0] > 0


def test_method_parameters_target_and_extras(ports: Ports) -> None:
    status, answer = post(
        f"{ports.http_url}/v1/models/digits:explain",
        {
            "instances": X.tolist(),
            "parameters": {"method": "integrated_gradients", "steps": 8, "target": 4},
        },
    )
    assert status == 200, answer
    rows = answer["explanations"]
    native = explain_rpc(
        ports,
        tensor=to_tensor(X),
        method=explain_pb2.METHOD_INTEGRATED_GRADIENTS,
        steps=8,
        targets=[4],
    )
    assert [r["target"] for r in rows] == [4, 4]
    np.testing.assert_array_equal(
        np.array([r["saliency"] for r in rows], np.float32), to_array(native.saliency)
    )
    np.testing.assert_allclose(
        [r["completeness_gap"] for r in rows], native.completeness_gap, rtol=1e-6
    )


def test_predict_answers_the_scores(ports: Ports) -> None:
    status, answer = post(f"{ports.http_url}/v1/models/digits:predict", {"instances": X.tolist()})
    assert status == 200, answer
    _, scores, _ = direct_explain("guided", X)
    np.testing.assert_allclose(answer["predictions"], scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("path", "payload", "status", "words"),
    [
        ("digits:explain", b"{", 400, "not JSON"),
        ("digits:explain", {"inputs": []}, 400, "instances"),
        ("digits:explain", {"instances": []}, 400, "empty"),
        ("digits:explain", {"instances": [[1, 2], [3]]}, 400, "equal-shaped"),
        ("digits:explain", {"instances": [X[0].tolist()], "parameters": {"method": "x"}},
         400, "unknown method"),
        ("digits:explain", {"instances": [{"b64": "%%%"}]}, 400, "base64"),
        ("digits:explain", {"instances": [{"b64": base64.b64encode(b"junk").decode()}]},
         400, "PNG or JPEG"),
        ("digits:explain", {"instances": [X[0].tolist(), {"b64": ""}]}, 400, "every instance"),
        ("digits:explain", {"instances": [X[0, :, :4].tolist()]}, 400, "shape"),
        ("nope:explain", {"instances": [X[0].tolist()]}, 404, "nope"),
        ("garbage:explain", {"instances": [X[0].tolist()]}, 503, "failed to load"),
        ("digits:train", {"instances": []}, 404, ":explain"),
    ],
)  # fmt: skip
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    ports: Ports, path: str, payload: Any, status: int, words: str
) -> None:
    got, answer = post(f"{ports.http_url}/v1/models/{path}", payload)
    assert got == status and words in answer["error"], answer
    assert post(f"{ports.http_url}/v1/models/digits:explain", {"instances": X.tolist()})[0] == 200


def test_model_list_and_readiness(ports: Ports) -> None:
    with urllib.request.urlopen(f"{ports.http_url}/v1/models", timeout=10) as answer:
        assert json.loads(answer.read()) == {"models": ["digits", "garbage", "norule"]}
    with urllib.request.urlopen(f"{ports.http_url}/v1/models/digits", timeout=10) as answer:
        assert json.loads(answer.read()) == {"name": "digits", "ready": True}
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(f"{ports.http_url}/v1/models/garbage", timeout=10)
    assert failed.value.code == 503


def test_tokens_guard_every_v1_endpoint(tmp_path: Path) -> None:
    with serving(make_repository(tmp_path), Security(tokens=(b"s3cret",))) as running:
        url = f"{running.http_url}/v1/models/digits:explain"
        assert post(url, {"instances": X.tolist()})[0] == 401
        assert post(url, {"instances": X.tolist()}, Authorization="Bearer s3cret")[0] == 200
