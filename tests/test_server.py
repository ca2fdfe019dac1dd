"""The Explain service over a real loopback socket, with the generated Python client."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnxplain.client import Client
from onnxplain.server import ExplainCall, Explainer, Explanation, Service
from PIL import Image

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_tensor

from helpers.server_support import SAMPLES, direct_explain, make_repository, running_server

METHODS = ("vanilla", "deconvnet", "guided")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[tuple[Service, Explainer]]:
    with running_server(repo) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: tuple[Service, Explainer]) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server[0].port}", timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: tuple[Service, Explainer]) -> Iterator[explain_pb2_grpc.ExplainServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server[0].port}") as channel:
        yield explain_pb2_grpc.ExplainServiceStub(channel)


def batch() -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(SAMPLES.glob("*.npy"))])


@pytest.mark.parametrize("method", METHODS)
def test_client_equals_the_explain_model_run_directly(client: Client, method: str) -> None:
    x = batch()
    saliency, scores, targets = direct_explain(method, x)
    got = client.explain("digits", x, method=method)
    np.testing.assert_array_equal(got.targets, targets)
    np.testing.assert_allclose(got.scores, scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.saliency, saliency, rtol=1e-5, atol=1e-6)
    assert got.method == method
    assert got.labels == [str(t) for t in targets]  # the demo's labels are the digits


@pytest.mark.parametrize("method", METHODS)
def test_explicit_targets_equal_the_explain_model(client: Client, method: str) -> None:
    x = batch()
    wanted = np.arange(len(x)) % 10
    saliency, _, _ = direct_explain(method, x, wanted)
    got = client.explain("digits", x, method=method, targets=wanted.tolist())
    np.testing.assert_array_equal(got.targets, wanted)
    np.testing.assert_allclose(got.saliency, saliency, rtol=1e-5, atol=1e-6)


def test_one_target_applies_to_every_sample(client: Client) -> None:
    x = batch()
    got = client.explain("digits", x, method="vanilla", targets=4)
    np.testing.assert_array_equal(got.targets, np.full(len(x), 4))
    np.testing.assert_allclose(
        got.saliency, direct_explain("vanilla", x, np.full(len(x), 4))[0], rtol=1e-5, atol=1e-6
    )


def test_image_input_is_preprocessed_as_the_config_says(client: Client) -> None:
    # train_demo.py saved each PNG together with the tensor it should preprocess to.
    for png in sorted(SAMPLES.glob("*.png")):
        expected = direct_explain("guided", np.load(png.with_suffix(".npy")))[0]
        got = client.explain("digits", png, heatmap=True)
        np.testing.assert_allclose(got.saliency, expected, rtol=1e-4, atol=1e-5)
        assert got.method == "guided"  # the config's default_method
        heat = Image.open(io.BytesIO(got.heatmap_png or b""))
        assert heat.format == "PNG" and heat.size == (8, 8)


def test_models_lists_the_broken_models_as_unavailable(client: Client, repo: Path) -> None:
    models = {m.name: m for m in client.models()}
    assert set(models) == {"digits", "garbage", "norule"}
    digits = models["digits"]
    assert digits.available and digits.input_shape == (-1, 1, 8, 8)
    assert digits.output_shape == (-1, 10) and digits.labels == tuple("0123456789")
    assert digits.takes_images and digits.default_method == "guided"
    for name in ("garbage", "norule"):
        assert not models[name].available and models[name].error
        assert str(repo) not in models[name].error
    assert "Acosh" in models["norule"].error  # the rewrite pass names the op without a rule
    assert client.model("digits") == digits


def _tensor(x: np.ndarray) -> pb.Tensor:
    return to_tensor(x)


def _png(mode: str = "L", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 8), 128).save(buffer, format=fmt)
    return buffer.getvalue()


GOOD = np.load(SAMPLES / "digit3.npy")
_truncated = _tensor(GOOD)
_truncated.data = _truncated.data[:-4]
_unspecified = _tensor(GOOD)
_unspecified.dtype = pb.DATA_TYPE_UNSPECIFIED
_nan, _inf = GOOD.copy(), GOOD.copy()
_nan[0, 0, 1, 1] = np.nan
_inf[0, 0, 2, 2] = -np.inf

INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_REQUESTS = {
    "unknown model": (
        pb.ExplainRequest(model="nope", tensor=_tensor(GOOD)),
        grpc.StatusCode.NOT_FOUND,
    ),
    "model failed to load": (
        pb.ExplainRequest(model="norule", tensor=_tensor(np.zeros((1, 4), np.float32))),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "no input": (pb.ExplainRequest(model="digits"), INVALID),
    "float64 input": (
        pb.ExplainRequest(model="digits", tensor=_tensor(GOOD.astype(np.float64))),
        INVALID,
    ),
    "int64 input": (
        pb.ExplainRequest(model="digits", tensor=_tensor(GOOD.astype(np.int64))),
        INVALID,
    ),
    "unspecified dtype": (pb.ExplainRequest(model="digits", tensor=_unspecified), INVALID),
    "wrong shape": (pb.ExplainRequest(model="digits", tensor=_tensor(GOOD[..., :7])), INVALID),
    "wrong rank": (pb.ExplainRequest(model="digits", tensor=_tensor(GOOD[0])), INVALID),
    "empty batch": (pb.ExplainRequest(model="digits", tensor=_tensor(GOOD[:0])), INVALID),
    "byte count": (pb.ExplainRequest(model="digits", tensor=_truncated), INVALID),
    "negative dim": (
        pb.ExplainRequest(
            model="digits", tensor=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[-1, 1, 8, 8])
        ),
        INVALID,
    ),
    "NaN": (pb.ExplainRequest(model="digits", tensor=_tensor(_nan)), INVALID),
    "infinity": (pb.ExplainRequest(model="digits", tensor=_tensor(_inf)), INVALID),
    "target too large": (
        pb.ExplainRequest(model="digits", tensor=_tensor(GOOD), targets=[10]),
        INVALID,
    ),
    "negative target": (
        pb.ExplainRequest(model="digits", tensor=_tensor(GOOD), targets=[-1]),
        INVALID,
    ),
    "targets count": (
        pb.ExplainRequest(model="digits", tensor=_tensor(np.repeat(GOOD, 2, 0)), targets=[1, 2, 3]),
        INVALID,
    ),
    "unknown method": (pb.ExplainRequest(model="digits", tensor=_tensor(GOOD), method=42), INVALID),  # type: ignore[arg-type]
    "undecodable image": (pb.ExplainRequest(model="digits", image=b"\x89PNG not really"), INVALID),
    "GIF image": (pb.ExplainRequest(model="digits", image=_png("P", "GIF")), INVALID),
    "batch over the limit": (
        pb.ExplainRequest(model="digits", tensor=_tensor(np.repeat(GOOD, 17, 0))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    "message over the limit": (
        pb.ExplainRequest(model="digits", image=b"\0" * (2 << 20)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_its_status_and_the_next_good_one_succeeds(
    stub: explain_pb2_grpc.ExplainServiceStub, client: Client, repo: Path, case: str
) -> None:
    request, code = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.Explain(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    assert details and "Traceback" not in details and str(repo) not in details
    assert "/" not in details.replace("NCHW/NHWC", "")  # no file paths of any kind
    good = client.explain("digits", GOOD, method="vanilla")
    np.testing.assert_allclose(good.saliency, direct_explain("vanilla", GOOD)[0], atol=1e-6)


def _health(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def test_health_serving(server: tuple[Service, Explainer]) -> None:
    for name in ("", "onnxplain.v1.ExplainService"):
        assert _health(server[0].port, name) == health_pb2.HealthCheckResponse.SERVING


class _Gated:
    """The real core, except that Explain waits for a gate: a request that stays in flight."""

    def __init__(self, core: Explainer) -> None:
        self.core = core
        self.repository = core.repository
        self.entered = threading.Event()
        self.gate = threading.Event()

    def explain(self, call: ExplainCall, *args: Any) -> Explanation:
        self.entered.set()
        assert self.gate.wait(20)
        return self.core.explain(call, *args)


def test_drain_reports_not_serving_and_finishes_in_flight_requests(repo: Path) -> None:
    from onnxplain.server import Limits, build_server

    with running_server(repo) as (_, core):
        gated = _Gated(core)
        service = build_server(gated, "127.0.0.1", 0, Limits())  # type: ignore[arg-type]
        target = f"127.0.0.1:{service.port}"
        results: list[np.ndarray] = []
        with Client(target, timeout=30) as client:
            in_flight = threading.Thread(
                target=lambda: results.append(client.explain("digits", GOOD).saliency)
            )
            in_flight.start()
            assert gated.entered.wait(10)
            drain = threading.Thread(target=service.drain, args=(1.0, 20.0))
            drain.start()
            time.sleep(0.2)
            assert _health(service.port) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert _health(service.port, "onnxplain.v1.ExplainService") == (
                health_pb2.HealthCheckResponse.NOT_SERVING
            )
            gated.gate.set()
            in_flight.join(20)
            drain.join(20)
        assert not drain.is_alive() and len(results) == 1
        np.testing.assert_allclose(results[0], direct_explain("guided", GOOD)[0], atol=1e-6)
