"""A method defined only in this file, registered at run time, is served by every layer: the
gRPC service (named by `method_name`, tuned by `parameters`), GetModel's listing, the
Python client, the CLI and the web page's API. No server or client file names it.

The toy: the plain gradient times a `factor` baked into the graph (a GRAPH parameter: each
value its own explain model) and times a `gain` fed at run time (RUN_TIME: one model for
every gain), with an extra per-row output (the map's sum) and a reported value (the gain
used). Oracle: onnxruntime running the rewrite pass's own vanilla explain model, times
factor x gain.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxplain.client import Client, ServiceError
from onnxplain.graph_rewrite import GRAD_INPUT, SALIENCY_OUTPUT, build_explain_model
from onnxplain.graph_rewrite.methods import (
    RUN_TIME,
    MethodSpec,
    Output,
    Param,
    RunFeeds,
    register,
    unregister,
)
from onnxplain.server import Explainer, Service
from onnxplain.server.protocols.web import WebPage, start_web_page
from onnxplain.server.store.repository import SessionKey
from PIL import Image

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.fd import session
from helpers.server_support import DEMO, SAMPLES, make_repository, running_server
from helpers.tools import require, require_module

TOY = "toy_scaled_gradient"
GAIN_INPUT = "toy_gain"
TOTAL_OUTPUT = "toy_total"


def _toy_model(
    model: onnx.ModelProto, params: Mapping[str, Any], **options: Any
) -> onnx.ModelProto:
    """The vanilla explain model, its saliency times the factor (a constant) and the gain
    (an input), plus the per-row sum of the result."""
    explain = build_explain_model(model, "vanilla", **options)
    graph = explain.graph
    raw = "toy_raw_saliency"
    for node in graph.node:
        node.output[:] = [raw if o == SALIENCY_OUTPUT else o for o in node.output]
    (old,) = [o for o in graph.output if o.name == SALIENCY_OUTPUT]
    elem_type = old.type.tensor_type.elem_type
    graph.output.remove(old)
    graph.input.append(helper.make_tensor_value_info(GAIN_INPUT, elem_type, [1]))
    factor = numpy_helper.from_array(np.array([params["factor"]], np.float32), "toy_factor")
    graph.initializer.append(factor)
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "toy_axis"))
    graph.node.extend(
        [
            helper.make_node("Mul", [raw, "toy_factor"], ["toy_scaled"]),
            helper.make_node("Mul", ["toy_scaled", GAIN_INPUT], [SALIENCY_OUTPUT]),
            helper.make_node("Flatten", [SALIENCY_OUTPUT], ["toy_flat"], axis=1),
            helper.make_node("ReduceSum", ["toy_flat", "toy_axis"], [TOTAL_OUTPUT], keepdims=0),
        ]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info(SALIENCY_OUTPUT, elem_type, None),
            helper.make_tensor_value_info(TOTAL_OUTPUT, TensorProto.FLOAT, None),
        ]
    )
    return explain


def _feeds(params: Mapping[str, Any], x: np.ndarray) -> RunFeeds:
    gain = params["gain"]
    if not np.isfinite(gain):
        raise ValueError(f"gain must be finite, not {gain}")
    return RunFeeds({GAIN_INPUT: np.array([gain], x.dtype)}, reported={"gain_used": gain})


TOY_SPEC = MethodSpec(
    name=TOY,
    summary="a test's toy: the gradient times a factor and a gain",
    build=lambda ctx: "",  # unused: whole_model builds the model
    params=(
        Param("factor", float, 2.0, "multiplies the gradient, in the graph"),
        Param("gain", float, 1.0, "multiplies it again, fed at run time", kind=RUN_TIME),
    ),
    whole_model=_toy_model,
    outputs=(
        Output(TOTAL_OUTPUT, "the sum of each row's map"),
        Output("gain_used", "the gain the run was fed", float),
    ),
    feeds=_feeds,
)


@pytest.fixture(scope="module")
def toy() -> Iterator[MethodSpec]:
    register(TOY_SPEC)
    yield TOY_SPEC
    unregister(TOY)


@pytest.fixture(scope="module")
def server(
    toy: MethodSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Explainer]]:
    with running_server(make_repository(tmp_path_factory.mktemp("models"))) as running:
        yield running


@pytest.fixture(scope="module")
def address(server: tuple[Service, Explainer]) -> str:
    return f"127.0.0.1:{server[0].port}"


@pytest.fixture(scope="module")
def stub(address: str) -> Iterator[explain_pb2_grpc.ExplainServiceStub]:
    with grpc.insecure_channel(address) as channel:
        yield explain_pb2_grpc.ExplainServiceStub(channel)


def batch() -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(SAMPLES.glob("*.npy"))])[:3]


def oracle(x: np.ndarray, targets: np.ndarray, factor: float, gain: float) -> np.ndarray:
    """onnxruntime's run of the rewrite pass's vanilla explain model, times factor x gain."""
    model = onnx.load(DEMO / "model.onnx")
    explain = session(build_explain_model(model, "vanilla", "input", "logits"))
    seed = np.eye(10, dtype=np.float32)[targets]
    (gradient,) = explain.run([SALIENCY_OUTPUT], {"input": x, GRAD_INPUT: seed})
    return gradient * np.float32(factor) * np.float32(gain)


def _value(v: Any) -> pb.ParamValue:
    if isinstance(v, float):
        return pb.ParamValue(float_value=v)
    if isinstance(v, str):
        return pb.ParamValue(string_value=v)
    return pb.ParamValue(int_value=v)


def _request_of(x: np.ndarray, **params: Any) -> pb.ExplainRequest:
    return pb.ExplainRequest(
        model="digits",
        tensor=to_tensor(x),
        method_name=TOY,
        parameters={k: _value(v) for k, v in params.items()},
    )


def test_grpc_serves_the_toy_by_name_with_its_parameters_and_outputs(
    stub: explain_pb2_grpc.ExplainServiceStub,
) -> None:
    x = batch()
    response = stub.Explain(_request_of(x, factor=3.0, gain=0.5), timeout=60)
    targets = np.asarray(response.targets)
    want = oracle(x, targets, 3.0, 0.5)
    np.testing.assert_allclose(to_array(response.saliency), want, rtol=1e-5, atol=1e-7)
    assert response.method_name == TOY
    assert response.method == pb.METHOD_UNSPECIFIED  # it has no enum value
    total = to_array(response.outputs[TOTAL_OUTPUT].tensor_value)
    np.testing.assert_allclose(total, want.reshape(len(x), -1).sum(axis=1), rtol=1e-4, atol=1e-6)
    assert response.outputs["gain_used"].float_value == 0.5


def test_get_model_lists_the_toy_from_the_registry(
    stub: explain_pb2_grpc.ExplainServiceStub,
) -> None:
    info = stub.GetModel(pb.GetModelRequest(name="digits"), timeout=30).model
    (toy,) = [m for m in info.method_info if m.name == TOY]
    assert toy.method == pb.METHOD_UNSPECIFIED
    assert toy.summary == TOY_SPEC.summary
    params = {p.name: p for p in toy.parameters}
    assert set(params) == {"factor", "gain"}
    assert (params["factor"].type, params["factor"].default_value) == ("float", "2.0")
    assert params["factor"].kind == pb.PARAMETER_KIND_GRAPH
    assert params["gain"].kind == pb.PARAMETER_KIND_RUN_TIME
    assert [(o.name, o.type) for o in toy.outputs] == [
        (TOTAL_OUTPUT, "tensor"),
        ("gain_used", "float"),
    ]
    # The released enum list cannot hold it; the by-name listing does.
    assert TOY not in {pb.Method.Name(m) for m in info.methods}


def test_a_run_time_parameter_reuses_the_session_a_graph_one_builds_another(
    stub: explain_pb2_grpc.ExplainServiceStub, server: tuple[Service, Explainer]
) -> None:
    model = server[1].repository.get("digits")
    x = batch()[:1]
    for gain in (1.5, -2.0, 4.0):
        stub.Explain(_request_of(x, factor=5.0, gain=gain), timeout=60)
    stub.Explain(_request_of(x, factor=7.0), timeout=60)
    toy_keys = [k for k in model.built() if k.method == TOY]
    assert SessionKey(TOY, (("factor", 5.0),)) in toy_keys
    assert SessionKey(TOY, (("factor", 7.0),)) in toy_keys
    # The gain never reaches a key: three gains, one session.
    assert all("gain" not in dict(k.params) for k in toy_keys)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"factor": "three"}, "'factor' takes a float"),
        ({"nope": 1}, "takes no 'nope'"),
        ({"gain": float("inf")}, "gain must be finite"),
    ],
)
def test_a_wrong_parameter_is_invalid_argument_naming_it(
    stub: explain_pb2_grpc.ExplainServiceStub, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Explain(_request_of(batch()[:1], **params), timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (raised.value.details() or "")


def test_an_unset_parameter_value_and_a_method_named_twice_are_refused(
    stub: explain_pb2_grpc.ExplainServiceStub,
) -> None:
    empty = _request_of(batch()[:1])
    empty.parameters["factor"].CopyFrom(pb.ParamValue())
    with pytest.raises(grpc.RpcError) as raised:
        stub.Explain(empty, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'factor' has no value" in (raised.value.details() or "")
    both = _request_of(batch()[:1])
    both.method = pb.METHOD_VANILLA
    with pytest.raises(grpc.RpcError) as raised:
        stub.Explain(both, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert TOY in (raised.value.details() or "")


def test_the_python_client_takes_params_and_keywords(address: str) -> None:
    x = batch()
    with Client(address, timeout=60) as client:
        got = client.explain("digits", x, method=TOY, params={"factor": 3.0}, gain=0.25)
        summary = client.model("digits")
        with pytest.raises(ServiceError) as raised:
            client.explain("digits", x, method=TOY, gain="loud")
    np.testing.assert_allclose(
        got.saliency, oracle(x, got.targets, 3.0, 0.25), rtol=1e-5, atol=1e-7
    )
    assert got.method == TOY
    assert got.outputs["gain_used"] == 0.25
    assert got.outputs[TOTAL_OUTPUT].shape == (len(x),)
    assert summary.methods[TOY] == {"factor": "2.0", "gain": "1.0"}
    assert {(p.name, p.type, p.kind) for p in summary.parameters[TOY]} == {
        ("factor", "float", "graph"),
        ("gain", "float", "run_time"),
    }
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'gain'" in raised.value.details


def test_the_cli_serves_the_toy_with_typed_params(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnxplain.cli import main

    x = batch()[:2]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "saliency.npy"
    argv = ["explain", "--server", address, "--model", "digits", "--method", TOY]
    files = [str(tmp_path / "x.npy"), "-o", str(out)]
    assert main([*argv, "--param", "factor=3", "--param", "gain=0.5", *files]) == 0
    text = capsys.readouterr().out
    assert f"{TOY} saliency, 2 explained:" in text
    assert "gain_used: 0.5" in text and f"{TOTAL_OUTPUT}: " in text
    targets = np.array(
        [int(line.split("class ")[1].split()[0]) for line in text.splitlines() if "sample" in line]
    )
    np.testing.assert_allclose(np.load(out), oracle(x, targets, 3.0, 0.5), rtol=1e-5, atol=1e-7)
    # Parsed by the types the server lists: a float parameter refuses a word, before any call.
    assert main([*argv, "--param", "factor=big", *files]) == 1
    assert "--param factor: 'big' is not a float" in capsys.readouterr().err
    assert main([*argv, "--param", "loudness=2", *files]) == 1
    assert "takes no 'loudness'" in capsys.readouterr().err
    assert main(["models", "--server", address]) == 0
    assert f"  {TOY} (factor=2.0, gain=1.0)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def web(server: tuple[Service, Explainer]) -> Iterator[WebPage]:
    page = start_web_page(server[1], "127.0.0.1", 0)
    yield page
    page.stop()


def _url(web: WebPage, path: str) -> str:
    return f"{web.scheme}://127.0.0.1:{web.port}{path}"


def _request(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of a GET, or of a POST when there is a body."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _digit_tensor(name: str) -> np.ndarray:
    """The demo's preprocessing of a sample PNG, written out: gray, /255, (x-0.3)/0.4."""
    pixels = np.asarray(Image.open(SAMPLES / name).convert("L"), dtype=np.float32) / 255.0
    return ((pixels - np.float32(0.3)) / np.float32(0.4))[None, None]


def test_the_web_api_lists_and_uses_the_toys_parameters(web: WebPage) -> None:
    status, listing = _request(_url(web, "/api/models"))
    assert status == 200
    (digits,) = [m for m in listing["models"] if m["name"] == "digits"]
    assert TOY in digits["methods"]
    params = {p["name"]: p for p in digits["method_params"][TOY]}
    assert params["factor"] == {
        "name": "factor",
        "type": "float",
        "kind": "graph",
        "default": 2.0,
        "description": "multiplies the gradient, in the graph",
        "choices": None,
    }
    assert params["gain"]["kind"] == "run_time"
    image = (SAMPLES / "digit3.png").read_bytes()
    query = f"model=digits&method={TOY}&target=3&param.factor=3&param.gain=0.5"
    status, answer = _request(_url(web, f"/api/explain?{query}"), image)
    assert status == 200, answer
    assert answer["method"] == TOY and answer["outputs"]["gain_used"] == 0.5
    want = oracle(_digit_tensor("digit3.png"), np.array([3]), 3.0, 0.5)
    np.testing.assert_allclose(answer["outputs"][TOTAL_OUTPUT], [want.sum()], rtol=1e-4)
    status, answer = _request(
        _url(web, f"/api/explain?model=digits&method={TOY}&param.factor=x"), image
    )
    assert status == 400 and "'factor' takes a float" in answer["error"]


CHROMIUM = "/usr/bin/chromium"


def test_the_page_generates_the_toys_controls_and_sends_them(web: WebPage, tmp_path: Path) -> None:
    require("Chromium", Path(CHROMIUM).is_file(), "apt-get install chromium")
    sync_api = require_module("playwright.sync_api", "pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(_url(web, "/"))
            sync_api.expect(page.locator("#model option")).to_have_count(3)
            page.select_option("#method", TOY)
            # One control per parameter, from the registry's listing, each with its default.
            assert page.locator("#method-params [data-param]").count() == 2
            assert page.locator("#param-factor").get_attribute("placeholder") == "2"
            page.fill("#param-factor", "3")
            page.fill("#param-gain", "0.5")
            page.set_input_files("#image", str(SAMPLES / "digit3.png"))
            page.select_option("#target", "3")
            with page.expect_response(lambda r: "/api/explain" in r.url) as answered:
                page.click("#explain")
            response = answered.value
            assert "param.factor=3" in response.url and "param.gain=0.5" in response.url
            assert response.status == 200
            # The same query answered again (the browser's copy of a large body is not kept).
            status, answer = _request(response.url, (SAMPLES / "digit3.png").read_bytes())
            assert status == 200
            want = oracle(_digit_tensor("digit3.png"), np.array([3]), 3.0, 0.5)
            np.testing.assert_allclose(answer["outputs"][TOTAL_OUTPUT], [want.sum()], rtol=1e-4)
            page.wait_for_selector("#result", state="visible", timeout=30_000)
            # A method without parameters shows no box.
            page.select_option("#method", "vanilla")
            assert page.locator("#method-params").is_hidden()
            assert not errors, errors
        finally:
            browser.close()
