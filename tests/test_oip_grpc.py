"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService` on the gRPC port):
tritonclient's gRPC client as users run it, the proto against tritonclient's own
definition, and the protocol's corners with the generated stubs.

The oracles: the Explain RPC's saliency for the same input, and the demo model's explain
model run straight in onnxruntime (`direct_explain`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor
from onnxplain.server.ops import metrics
from onnxplain.server.ops.security import Security

from onnxplain.inference import grpc_service_pb2 as pb
from onnxplain.inference import grpc_service_pb2_grpc
from onnxplain.v1 import explain_pb2, explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.oip_support import Ports, run_tritonclient, serving
from helpers.server_support import SAMPLES, direct_explain, make_repository

X = np.concatenate([np.load(SAMPLES / "digit7.npy"), np.load(SAMPLES / "digit3.npy")])


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    with serving(make_repository(tmp_path_factory.mktemp("models"))) as running:
        yield running


@pytest.fixture(scope="module")
def stub(ports: Ports) -> Iterator[grpc_service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(ports.grpc_address) as channel:
        yield grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _repeated(field: Any) -> bool:
    """protobuf 7 has is_repeated and no label; protobuf 6 (tritonclient's) may lack it."""
    repeated = getattr(field, "is_repeated", None)
    return bool(field.label == 3) if repeated is None else bool(repeated)


def explain_rpc(ports: Ports, x: np.ndarray, method: int) -> explain_pb2.ExplainResponse:
    with grpc.insecure_channel(ports.grpc_address) as channel:
        explain = explain_pb2_grpc.ExplainServiceStub(channel)
        request = explain_pb2.ExplainRequest(model="digits", tensor=to_tensor(x), method=method)
        return explain.Explain(request, timeout=60)


def infer_request(x: np.ndarray, **parameters: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits", id="req-1")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    for key, value in parameters.items():
        if isinstance(value, str):
            request.parameters[key].string_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].double_param = float(value)  # type: ignore[arg-type]
    return request


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Each output as an array, read from the raw contents by its declared type."""
    types = {"FP32": "<f4", "INT64": "<i8", "FP64": "<f8"}
    return {
        o.name: np.frombuffer(raw, types[o.datatype]).reshape(list(o.shape))
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def test_tritonclient_grpc_gets_the_explain_rpcs_saliency(ports: Ports, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    report = run_tritonclient(
        "grpc", ports.grpc_address, "digits", str(tmp_path / "x.npy"), str(tmp_path),
        "--parameters", json.dumps({"method": "guided"}),
    )  # fmt: skip
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["server"]["name"] == "onnxplain"
    meta = report["metadata"]
    assert meta["name"] == "digits"
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("input", "FP32", [-1, 1, 8, 8])
    ]
    assert [t["name"] for t in meta["outputs"]] == ["logits", "saliency", "explained_targets"]
    assert report["outputs"] == ["logits", "saliency", "explained_targets"]
    assert report["parameters"]["method"]["string_param"] == "guided"

    native = explain_rpc(ports, X, explain_pb2.METHOD_GUIDED)
    saliency = np.load(tmp_path / "saliency.npy")
    np.testing.assert_array_equal(saliency, to_array(native.saliency))
    expected, scores, targets = direct_explain("guided", X)
    np.testing.assert_allclose(saliency, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), scores, atol=1e-5)
    assert np.load(tmp_path / "explained_targets.npy").tolist() == targets.tolist()

    wrong = report["wrong_datatype"]
    assert wrong is not None and wrong["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "FP64" in wrong["message"] and "FP32" in wrong["message"]
    assert report["after_refusal"] == targets.tolist()  # the server kept serving


def test_tritonclient_sends_png_images_as_bytes(ports: Ports, tmp_path: Path) -> None:
    """tritonclient's BYTES (an np.object_ array of PNG files) with top_k, as users send it."""
    files = [SAMPLES / f"digit{d}.png" for d in (0, 5)]
    np.save(tmp_path / "x.npy", X)
    report = run_tritonclient(
        "grpc", ports.grpc_address, "digits", str(tmp_path / "x.npy"), str(tmp_path),
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


def test_the_proto_matches_tritonclients_definition() -> None:
    """Every message and field we declare has tritonclient's number, type, label and
    message type, and every RPC its request and response: the wire is theirs."""
    theirs = run_tritonclient("descriptor")
    assert theirs["package"] == pb.DESCRIPTOR.package == "inference"
    ours: dict[str, dict[str, list[object]]] = {}

    def walk(message: Descriptor) -> None:
        ours[message.full_name] = {
            f.name: [
                f.number,
                f.type,
                _repeated(f),
                f.message_type.full_name if f.message_type else "",
            ]
            for f in message.fields
        }
        for nested in message.nested_types:
            walk(nested)

    for message in pb.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    assert len(ours) >= 20
    # The Open Inference Protocol's model properties, which Triton's definition lacks.
    extra = "inference.ModelMetadataResponse.PropertiesEntry"
    for name, fields in ours.items():
        if name == extra:
            continue
        assert name in theirs["messages"], name
        for field, spec in fields.items():
            if (name, field) == ("inference.ModelMetadataResponse", "properties"):
                continue  # the Open Inference Protocol's addition, which Triton lacks
            assert theirs["messages"][name].get(field) == spec, f"{name}.{field}"
        # Nothing of theirs that we declare only in part (Triton's extra fields aside).
        missing = set(theirs["messages"][name]) - set(fields)
        assert not missing, f"{name} lacks {missing}"
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        assert theirs["rpcs"][method.name] == [
            method.input_type.full_name,
            method.output_type.full_name,
        ]


def test_typed_contents_answer_as_raw_contents_do(
    stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    raw = outputs(stub.ModelInfer(infer_request(X, method="vanilla"), timeout=60))
    typed = pb.ModelInferRequest(model_name="digits")
    typed.inputs.add(name="input", datatype="FP32", shape=X.shape).contents.fp32_contents.extend(
        X.ravel().tolist()
    )
    typed.parameters["method"].string_param = "vanilla"
    response = stub.ModelInfer(typed, timeout=60)
    np.testing.assert_array_equal(outputs(response)["saliency"], raw["saliency"])
    expected, _, _ = direct_explain("vanilla", X)
    np.testing.assert_allclose(raw["saliency"], expected, rtol=1e-5, atol=1e-6)


def test_targets_input_and_target_parameter(
    stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    """An INT64 `targets` input, -1 for the sample's top class, and `target` for all."""
    request = infer_request(X, method="vanilla")
    request.inputs.add(name="targets", datatype="INT64", shape=[2])
    request.raw_input_contents.append(np.array([5, -1], "<i8").tobytes())
    got = outputs(stub.ModelInfer(request, timeout=60))
    _, scores, _ = direct_explain("vanilla", X)
    top = int(scores[1].argmax())
    assert got["explained_targets"].tolist() == [5, top]
    expected, _, _ = direct_explain("vanilla", X, np.array([5, top]))
    np.testing.assert_allclose(got["saliency"], expected, rtol=1e-5, atol=1e-6)

    one = outputs(stub.ModelInfer(infer_request(X, method="vanilla", target=4), timeout=60))
    assert one["explained_targets"].tolist() == [4, 4]
    expected, _, _ = direct_explain("vanilla", X, np.array([4, 4]))
    np.testing.assert_allclose(one["saliency"], expected, rtol=1e-5, atol=1e-6)


def test_method_parameters_and_a_methods_own_outputs(
    stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub, ports: Ports
) -> None:
    """IG's steps by name, and its completeness gap as an output; the same numbers as the
    Explain RPC with the same parameters."""
    request = infer_request(X, method="integrated_gradients", steps=8)
    response = stub.ModelInfer(request, timeout=60)
    got = outputs(response)
    assert set(got) == {"logits", "saliency", "explained_targets", "completeness_gap"}
    assert response.parameters["method"].string_param == "integrated_gradients"
    assert response.id == "req-1" and response.model_name == "digits"
    with grpc.insecure_channel(ports.grpc_address) as channel:
        native = explain_pb2_grpc.ExplainServiceStub(channel).Explain(
            explain_pb2.ExplainRequest(
                model="digits",
                tensor=to_tensor(X),
                method=explain_pb2.METHOD_INTEGRATED_GRADIENTS,
                steps=8,
            ),
            timeout=60,
        )
    np.testing.assert_array_equal(got["saliency"], to_array(native.saliency))
    np.testing.assert_allclose(got["completeness_gap"], native.completeness_gap, rtol=1e-6)

    only = infer_request(X, method="vanilla")
    only.outputs.add(name="saliency")
    response = stub.ModelInfer(only, timeout=60)
    assert [o.name for o in response.outputs] == ["saliency"]


IMAGES = [(SAMPLES / f"digit{d}.png").read_bytes() for d in (0, 5)]


def image_request(images: list[bytes], raw: bool, **parameters: object) -> pb.ModelInferRequest:
    """The model's input as BYTES, one PNG per sample: raw (4-byte length, then the bytes,
    as tritonclient serialises BYTES) or as bytes_contents."""
    request = infer_request(X, **parameters)
    del request.raw_input_contents[:]
    del request.inputs[:]
    tensor = request.inputs.add(name="input", datatype="BYTES", shape=[len(images)])
    if raw:
        request.raw_input_contents.append(
            b"".join(len(i).to_bytes(4, "little") + i for i in images)
        )
    else:
        tensor.contents.bytes_contents.extend(images)
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "bytes_contents"])
def test_png_images_as_bytes_with_top_k_give_the_explain_rpcs_rows(
    stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub, ports: Ports, raw: bool
) -> None:
    request = image_request(IMAGES, raw, method="vanilla", top_k=2)
    got = outputs(stub.ModelInfer(request, timeout=60))
    assert got["explained_samples"].tolist() == [0, 0, 1, 1]
    with grpc.insecure_channel(ports.grpc_address) as channel:
        explain = explain_pb2_grpc.ExplainServiceStub(channel)
        for sample, image in enumerate(IMAGES):
            native = explain.Explain(
                explain_pb2.ExplainRequest(
                    model="digits", image=image, method=explain_pb2.METHOD_VANILLA, top_k=2
                ),
                timeout=60,
            )
            rows = got["explained_samples"] == sample
            assert got["explained_targets"][rows].tolist() == list(native.targets)
            np.testing.assert_array_equal(got["saliency"][rows], to_array(native.saliency))


def test_top_k_on_a_tensor_input(stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    got = outputs(stub.ModelInfer(infer_request(X, method="vanilla", top_k=3), timeout=60))
    _, scores, _ = direct_explain("vanilla", X)
    best = np.argsort(-scores, axis=1)[:, :3]
    assert got["explained_samples"].tolist() == [0, 0, 0, 1, 1, 1]
    assert got["explained_targets"].tolist() == best.ravel().tolist()
    expected, _, _ = direct_explain("vanilla", X[[0, 0, 0, 1, 1, 1]], best.ravel())
    np.testing.assert_allclose(got["saliency"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("request_of", "words"),
    [
        (lambda: image_request([b"not an image"], True), "could not be decoded as PNG or JPEG"),
        (lambda: image_request([b"GIF89a" + bytes(20)], False), "GIF"),
        (lambda: image_request(IMAGES * 9, False), "1 <= N <= 16"),
        (lambda: _truncated(image_request(IMAGES, True)), "BYTES element says"),
        (lambda: infer_request(X, top_k=-1), "top_k is -1"),
        (lambda: infer_request(X, top_k=11), "top_k is 11"),
        (lambda: infer_request(X, top_k="two"), "'top_k' must be a whole number"),
        (lambda: infer_request(X, top_k=2, target=3), "not both"),
    ],
)  # fmt: skip
def test_bad_images_and_top_k_are_invalid_argument(
    stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub, request_of: Any, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request_of(), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refused.value.details(), refused.value.details()
    assert stub.ModelInfer(infer_request(X), timeout=60).outputs  # still serving


def _truncated(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request.raw_input_contents[0] = request.raw_input_contents[0][:-10]
    return request


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (lambda r: r.parameters["method"].CopyFrom(pb.InferParameter(string_param="nope")),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown method"),
        (lambda r: r.parameters["steps"].CopyFrom(pb.InferParameter(string_param="many")),
         grpc.StatusCode.INVALID_ARGUMENT, "whole number"),
        (lambda r: r.parameters["bogus"].CopyFrom(pb.InferParameter(int64_param=1)),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown parameter 'bogus'"),
        (lambda r: r.parameters["sigma"].CopyFrom(pb.InferParameter(double_param=0.2)),
         grpc.StatusCode.INVALID_ARGUMENT, "takes no 'sigma'"),
        (lambda r: setattr(r.inputs[0], "name", "image"),
         grpc.StatusCode.INVALID_ARGUMENT, "no input 'image'"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 12),
         grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
        (lambda r: setattr(r.inputs[0], "datatype", "BF16"),
         grpc.StatusCode.INVALID_ARGUMENT, "BF16"),
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        (lambda r: setattr(r, "model_version", "7"), grpc.StatusCode.NOT_FOUND, "version"),
        (lambda r: setattr(r, "model_name", "garbage"),
         grpc.StatusCode.FAILED_PRECONDITION, "failed to load"),
    ],
)  # fmt: skip
def test_bad_requests_get_the_explain_rpcs_codes(
    stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub,
    change: object,
    code: grpc.StatusCode,
    words: str,
) -> None:
    request = infer_request(X, method="guided")
    change(request)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request, timeout=60)
    assert refused.value.code() == code and words in refused.value.details()
    assert stub.ModelInfer(infer_request(X), timeout=60).outputs  # still serving


def test_model_ready_and_metadata(stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=10).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="garbage"), timeout=10).ready
    with pytest.raises(grpc.RpcError) as unknown:
        stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"), timeout=10)
    assert meta.platform == "onnxruntime_onnx" and list(meta.versions) == ["1"]
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        ("logits", "FP32", [-1, 10]),
        ("saliency", "FP32", [-1, 1, 8, 8]),
        ("explained_targets", "INT64", [-1]),
    ]
    assert meta.properties["default_method"] == "guided"
    assert meta.properties["image_input"] == "true"  # digits has image preprocessing


def test_tokens_guard_inference_but_not_liveness(tmp_path: Path) -> None:
    security = Security(tokens=(b"s3cret",))
    with (
        serving(make_repository(tmp_path), security) as running,
        grpc.insecure_channel(running.grpc_address) as channel,
    ):
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        for call, request in (
            (stub.ModelInfer, infer_request(X)),
            (stub.ModelMetadata, pb.ModelMetadataRequest(name="digits")),
            (stub.ModelReady, pb.ModelReadyRequest(name="digits")),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = [("authorization", "Bearer s3cret")]
        assert stub.ModelInfer(infer_request(X), metadata=token, timeout=60).outputs


def test_metrics_count_model_infer_under_its_protocol(
    stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    registry = metrics.enable()
    labels = {"protocol": "oip-grpc", "rpc": "ModelInfer", "model": "digits"}

    def count(method: str, code: str) -> float:
        value = registry.get_sample_value(
            "onnxplain_requests_total", {**labels, "method": method, "code": code}
        )
        return value or 0.0

    before_ok, before_bad = count("vanilla", "OK"), count("vanilla", "INVALID_ARGUMENT")
    stub.ModelInfer(infer_request(X, method="vanilla"), timeout=60)
    bad = infer_request(X, method="vanilla")
    bad.inputs[0].datatype = "FP64"
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(bad, timeout=60)
    assert count("vanilla", "OK") == before_ok + 1
    assert count("vanilla", "INVALID_ARGUMENT") == before_bad + 1
