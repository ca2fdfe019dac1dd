"""The Open Inference Protocol over REST, on the `--http` port: tritonclient's HTTP client
(the binary tensor extension) as users run it, and plain JSON with urllib.

The oracles: the Explain RPC's saliency for the same input, and the demo model's explain
model run straight in onnxruntime (`direct_explain`).
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

from helpers.oip_support import Ports, run_tritonclient, serving
from helpers.server_support import SAMPLES, direct_explain, make_repository

X = np.concatenate([np.load(SAMPLES / "digit7.npy"), np.load(SAMPLES / "digit3.npy")])
# A binary request whose input says 256 bytes follow (one 8x8 FP32 sample); 8 do.
SHORT = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                 "parameters": {"binary_data_size": 256}}]}
).encode()  # fmt: skip


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    with serving(make_repository(tmp_path_factory.mktemp("models"))) as running:
        yield running


def call(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; an error status is an answer, not a raise."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def infer_json(ports: Ports, request: dict[str, Any], **headers: str) -> tuple[int, Any]:
    status, _, body = call(
        f"{ports.http_url}/v2/models/digits/infer", json.dumps(request).encode(), headers
    )
    return status, json.loads(body)


def tensor(x: np.ndarray) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}


def test_tritonclient_http_gets_the_explain_rpcs_saliency(ports: Ports, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    report = run_tritonclient(
        "http", f"127.0.0.1:{ports.http}", "digits", str(tmp_path / "x.npy"), str(tmp_path),
        "--parameters", json.dumps({"method": "guided"}),
    )  # fmt: skip
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["server"]["name"] == "onnxplain"
    assert "binary_tensor_data" in report["server"]["extensions"]
    meta = report["metadata"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert report["outputs"] == ["logits", "saliency", "explained_targets"]
    assert report["parameters"] == {"method": "guided"}

    with grpc.insecure_channel(ports.grpc_address) as channel:
        native = explain_pb2_grpc.ExplainServiceStub(channel).Explain(
            explain_pb2.ExplainRequest(
                model="digits", tensor=to_tensor(X), method=explain_pb2.METHOD_GUIDED
            ),
            timeout=60,
        )
    saliency = np.load(tmp_path / "saliency.npy")
    np.testing.assert_array_equal(saliency, to_array(native.saliency))
    expected, scores, targets = direct_explain("guided", X)
    np.testing.assert_allclose(saliency, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), scores, atol=1e-5)

    wrong = report["wrong_datatype"]
    assert wrong is not None and wrong["status"] == "400"
    assert "FP64" in wrong["message"] and "FP32" in wrong["message"]
    assert report["after_refusal"] == targets.tolist()  # the server kept serving


def test_tritonclient_sends_png_images_as_bytes(ports: Ports, tmp_path: Path) -> None:
    """tritonclient's BYTES (an np.object_ array of PNG files) with top_k, as users send it."""
    files = [SAMPLES / f"digit{d}.png" for d in (0, 5)]
    np.save(tmp_path / "x.npy", X)
    report = run_tritonclient(
        "http", f"127.0.0.1:{ports.http}", "digits", str(tmp_path / "x.npy"), str(tmp_path),
        "--images", ",".join(map(str, files)),
        "--image-parameters", json.dumps({"method": "vanilla", "top_k": 2}),
    )  # fmt: skip
    assert report["image_outputs"] == [
        "logits", "saliency", "explained_targets", "explained_samples"
    ]  # fmt: skip
    samples = np.load(tmp_path / "images_explained_samples.npy")
    assert samples.tolist() == [0, 0, 1, 1]
    saliency = np.load(tmp_path / "images_saliency.npy")
    targets = np.load(tmp_path / "images_explained_targets.npy")
    with grpc.insecure_channel(ports.grpc_address) as channel:
        explain = explain_pb2_grpc.ExplainServiceStub(channel)
        for sample, file in enumerate(files):
            native = explain.Explain(
                explain_pb2.ExplainRequest(
                    model="digits", image=file.read_bytes(),
                    method=explain_pb2.METHOD_VANILLA, top_k=2,
                ),
                timeout=60,
            )  # fmt: skip
            assert targets[samples == sample].tolist() == list(native.targets)
            np.testing.assert_array_equal(saliency[samples == sample], to_array(native.saliency))


def test_json_infer_with_targets_and_parameters(ports: Ports) -> None:
    request = {
        "id": "r7",
        "inputs": [
            tensor(X),
            {"name": "targets", "datatype": "INT64", "shape": [2], "data": [2, -1]},
        ],
        "parameters": {"method": "vanilla"},
    }
    status, answer = infer_json(ports, request)
    assert status == 200, answer
    assert answer["id"] == "r7" and answer["model_name"] == "digits"
    assert answer["parameters"] == {"method": "vanilla"}
    got = {o["name"]: o for o in answer["outputs"]}
    _, scores, _ = direct_explain("vanilla", X)
    wanted = np.array([2, int(scores[1].argmax())])
    assert got["explained_targets"]["data"] == wanted.tolist()
    expected, _, _ = direct_explain("vanilla", X, wanted)
    saliency = np.array(got["saliency"]["data"], np.float32).reshape(got["saliency"]["shape"])
    np.testing.assert_allclose(saliency, expected, rtol=1e-5, atol=1e-6)


def test_binary_extension_by_hand(ports: Ports) -> None:
    """The JSON header's length in Inference-Header-Content-Length, then the raw bytes; a
    binary output comes back the same way, a JSON one as data."""
    raw = X.astype("<f4").tobytes()
    header = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(X.shape),
             "parameters": {"binary_data_size": len(raw)}},
        ],
        "outputs": [{"name": "saliency", "parameters": {"binary_data": True}},
                    {"name": "explained_targets"}],
        "parameters": {"method": "integrated_gradients", "steps": 4},
    }  # fmt: skip
    text = json.dumps(header).encode()
    status, headers, body = call(
        f"{ports.http_url}/v2/models/digits/versions/1/infer",
        text + raw,
        {"Inference-Header-Content-Length": str(len(text))},
    )
    assert status == 200, body
    length = int(headers["Inference-Header-Content-Length"])
    answer = json.loads(body[:length])
    saliency_meta, targets_meta = answer["outputs"]
    size = saliency_meta["parameters"]["binary_data_size"]
    saliency = np.frombuffer(body[length : length + size], "<f4").reshape(X.shape)
    assert len(body) == length + size
    _, _, targets = direct_explain("vanilla", X)
    assert targets_meta["data"] == targets.tolist()
    with grpc.insecure_channel(ports.grpc_address) as channel:
        native = explain_pb2_grpc.ExplainServiceStub(channel).Explain(
            explain_pb2.ExplainRequest(
                model="digits",
                tensor=to_tensor(X),
                method=explain_pb2.METHOD_INTEGRATED_GRADIENTS,
                steps=4,
            ),
            timeout=60,
        )
    np.testing.assert_array_equal(saliency, to_array(native.saliency))


IMAGES = [(SAMPLES / f"digit{d}.png").read_bytes() for d in (0, 5)]


def images_json(images: list[bytes]) -> dict[str, Any]:
    """The model's input as BYTES in JSON: one base64 string per PNG."""
    data = [base64.b64encode(i).decode() for i in images]
    return {"name": "input", "datatype": "BYTES", "shape": [len(images)], "data": data}


def native_top_k(ports: Ports, image: bytes, k: int) -> explain_pb2.ExplainResponse:
    with grpc.insecure_channel(ports.grpc_address) as channel:
        return explain_pb2_grpc.ExplainServiceStub(channel).Explain(
            explain_pb2.ExplainRequest(
                model="digits", image=image, method=explain_pb2.METHOD_VANILLA, top_k=k
            ),
            timeout=60,
        )


def test_json_base64_images_with_top_k(ports: Ports) -> None:
    status, answer = infer_json(
        ports,
        {"inputs": [images_json(IMAGES)], "parameters": {"method": "vanilla", "top_k": 2}},
    )
    assert status == 200, answer
    got = {o["name"]: o for o in answer["outputs"]}
    assert got["explained_samples"]["data"] == [0, 0, 1, 1]
    saliency = np.array(got["saliency"]["data"], np.float32).reshape(got["saliency"]["shape"])
    for sample, image in enumerate(IMAGES):
        native = native_top_k(ports, image, 2)
        rows = slice(2 * sample, 2 * sample + 2)
        assert got["explained_targets"]["data"][rows] == list(native.targets)
        np.testing.assert_array_equal(saliency[rows], to_array(native.saliency))


def test_binary_bytes_images_by_hand(ports: Ports) -> None:
    """BYTES in the binary extension: each element's 4-byte little-endian length, then it."""
    raw = b"".join(len(i).to_bytes(4, "little") + i for i in IMAGES)
    header = {
        "inputs": [{"name": "input", "datatype": "BYTES", "shape": [2],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "saliency", "parameters": {"binary_data": True}}],
        "parameters": {"method": "vanilla", "top_k": 1},
    }  # fmt: skip
    text = json.dumps(header).encode()
    status, headers, body = call(
        f"{ports.http_url}/v2/models/digits/infer",
        text + raw,
        {"Inference-Header-Content-Length": str(len(text))},
    )
    assert status == 200, body
    length = int(headers["Inference-Header-Content-Length"])
    (meta,) = json.loads(body[:length])["outputs"]
    saliency = np.frombuffer(body[length:], "<f4").reshape(meta["shape"])
    for sample, image in enumerate(IMAGES):
        native = native_top_k(ports, image, 1)
        np.testing.assert_array_equal(saliency[sample : sample + 1], to_array(native.saliency))


@pytest.mark.parametrize(
    ("request_body", "headers", "status", "words"),
    [
        (b"not json", {}, 400, "not JSON"),
        (b'{"inputs": []}', {}, 400, "'inputs'"),
        (json.dumps({"inputs": [tensor(X)], "parameters": {"method": "nope"}}).encode(), {},
         400, "unknown method"),
        (json.dumps({"inputs": [{**tensor(X), "datatype": "FP64"}]}).encode(), {}, 400, "FP64"),
        (json.dumps({"inputs": [{**tensor(X), "shape": [2, 1, 8, 7]}]}).encode(), {},
         400, "values"),
        (json.dumps({"inputs": [{**tensor(X), "data": [["a"]]}]}).encode(), {}, 400, "values"),
        (SHORT + b"\0" * 8, {"Inference-Header-Content-Length": str(len(SHORT))}, 400, "binary"),
        (b"{}", {"Inference-Header-Content-Length": "99"}, 400, "Inference-Header"),
        (json.dumps({"inputs": [{**images_json(IMAGES), "data": ["%%%", "a"]}]}).encode(), {},
         400, "must be base64"),
        (json.dumps({"inputs": [images_json([b"junk"])]}).encode(), {}, 400, "PNG or JPEG"),
        (json.dumps({"inputs": [{**images_json(IMAGES), "shape": [3]}]}).encode(), {},
         400, "BYTES elements"),
        (json.dumps({"inputs": [tensor(X)], "parameters": {"top_k": 30}}).encode(), {},
         400, "top_k is 30"),
        (json.dumps({"inputs": [tensor(X)], "parameters": {"top_k": True}}).encode(), {},
         400, "whole number"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_and_the_server_keeps_serving(
    ports: Ports, request_body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    got, _, body = call(f"{ports.http_url}/v2/models/digits/infer", request_body, headers)
    assert got == status and words in json.loads(body)["error"], body
    assert infer_json(ports, {"inputs": [tensor(X)]})[0] == 200


def test_health_readiness_and_unknown_models(ports: Ports) -> None:
    url = ports.http_url
    assert call(f"{url}/v2/health/live")[0] == 200
    assert call(f"{url}/v2/health/ready")[0] == 200
    assert call(f"{url}/v2/models/digits/ready")[0] == 200
    assert call(f"{url}/v2/models/garbage/ready")[0] == 503  # failed to load
    assert call(f"{url}/v2/models/nope/ready")[0] == 404
    assert call(f"{url}/v2/models/nope")[0] == 404
    assert call(f"{url}/v2/models/digits/versions/2")[0] == 404
    status, _, body = call(f"{url}/v2/models/garbage/infer", json.dumps({"inputs": []}).encode())
    assert status == 503 and "failed to load" in json.loads(body)["error"]
    assert call(f"{url}/v2/models/digits/infer")[0] == 405  # a GET
    assert call(f"{url}/v2/elsewhere")[0] == 404


def test_tokens_guard_inference_but_not_health(tmp_path: Path) -> None:
    with serving(make_repository(tmp_path), Security(tokens=(b"s3cret",))) as running:
        url = running.http_url
        assert call(f"{url}/v2/health/live")[0] == 200
        assert call(f"{url}/v2/health/ready")[0] == 200
        for path in ("/v2/models/digits", "/v2/models/digits/ready", "/v2"):
            assert call(url + path)[0] == 401, path
        body = json.dumps({"inputs": [tensor(X)]}).encode()
        assert call(f"{url}/v2/models/digits/infer", body)[0] == 401
        token = {"Authorization": "Bearer s3cret"}
        assert call(f"{url}/v2/models/digits/infer", body, token)[0] == 200


def test_metrics_count_rest_infer_under_its_protocol(ports: Ports) -> None:
    registry = metrics.enable()
    labels = {"protocol": "oip-rest", "rpc": "ModelInfer", "model": "digits", "method": "vanilla"}

    def count(code: str) -> float:
        value = registry.get_sample_value("onnxplain_requests_total", {**labels, "code": code})
        return value or 0.0

    before = count("OK")
    assert infer_json(ports, {"inputs": [tensor(X)], "parameters": {"method": "vanilla"}})[0] == 200
    assert count("OK") == before + 1
    nobody = {"protocol": "oip-rest", "rpc": "ModelInfer", "model": "unknown", "method": ""}
    before = (
        registry.get_sample_value("onnxplain_requests_total", {**nobody, "code": "NOT_FOUND"})
        or 0.0
    )
    call(f"{ports.http_url}/v2/models/invented/infer", b"{}")
    after = registry.get_sample_value("onnxplain_requests_total", {**nobody, "code": "NOT_FOUND"})
    assert after == before + 1  # an invented name counts as "unknown", with gRPC's code
