"""Prometheus metrics over real HTTP, parsed by prometheus-client's own parser: requests by
RPC, model, method and status code, latency histograms, models loaded and failed, reload
outcomes, and the queue and batch hooks."""

from __future__ import annotations

import re
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from onnxplain.server import Explainer, Limits, Repository, SessionFactory, build_server
from onnxplain.server.ops import metrics
from onnxplain.server.ops.reload import Reloader, snapshot
from prometheus_client.parser import text_string_to_metric_families

from onnxplain.v1 import admin_pb2, admin_pb2_grpc, explain_pb2_grpc
from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1.tensors import to_tensor

from helpers.serve_process import ServeProcess, wait_for
from helpers.server_support import DEMO, SAMPLES, make_repository

X = np.load(SAMPLES / "digit0.npy")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Running:
    def __init__(self, root: Path) -> None:
        sessions = SessionFactory("cpu", threads=1)
        loaded = snapshot(root)
        repository = Repository.load(root, sessions)
        self.reloader = Reloader(root, repository, sessions, loaded)
        core = Explainer(repository, max_batch=4, max_concurrent=4)
        self.service = build_server(core, "127.0.0.1", 0, Limits(), self.reloader)
        self.http, self.metrics_port = metrics.serve("127.0.0.1", 0)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.service.port}")
        self.stub = explain_pb2_grpc.ExplainServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def explain(self, model: str, x: np.ndarray, method: int = 0) -> grpc.StatusCode:
        request = pb.ExplainRequest(model=model, tensor=to_tensor(x), method=method)  # type: ignore[arg-type]
        try:
            self.stub.Explain(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.channel.close()
        self.reloader.close()
        self.service.server.stop(None).wait()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    server = Running(make_repository(tmp_path / "models"))
    yield server
    server.close()


def test_requests_by_rpc_model_method_and_code(running: Running) -> None:
    before = scrape(running.metrics_port)
    vanilla = pb.METHOD_VANILLA
    for _ in range(3):
        assert running.explain("digits", X, vanilla) == grpc.StatusCode.OK
    assert running.explain("digits", X) == grpc.StatusCode.OK  # the default: guided
    assert running.explain("digits", X[..., :7], vanilla) == grpc.StatusCode.INVALID_ARGUMENT
    for bogus in ("nope", "nope2", "x" * 200):
        assert running.explain(bogus, X, vanilla) == grpc.StatusCode.NOT_FOUND
    running.stub.ListModels(pb.ListModelsRequest(), timeout=10)
    after = scrape(running.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "onnxplain_requests_total"
    explain = {"protocol": "onnxplain", "rpc": "Explain", "model": "digits"}
    assert delta(requests, **explain, method="vanilla", code="OK") == 3
    assert delta(requests, **explain, method="guided", code="OK") == 1
    assert delta(requests, **explain, method="vanilla", code="INVALID_ARGUMENT") == 1
    native = {"protocol": "onnxplain"}
    unknown = {**native, "rpc": "Explain", "model": "unknown", "method": "vanilla"}
    assert delta(requests, **unknown, code="NOT_FOUND") == 3
    assert delta(requests, **native, rpc="ListModels", model="", method="", code="OK") == 1
    # A client cannot mint time series: invented model names all count as "unknown".
    assert not any(dict(labels).get("model", "").startswith(("nope", "xx")) for _, labels in after)
    # Latency: one observation per answer, in seconds, with a bucket above every one.
    seconds = "onnxplain_request_seconds"
    assert delta(f"{seconds}_count", **explain, method="vanilla") == 4
    total = delta(f"{seconds}_sum", **explain, method="vanilla")
    assert 0 < total < 60
    assert delta(f"{seconds}_bucket", **explain, method="vanilla", le="+Inf") == 4
    assert value(after, "onnxplain_requests_in_flight") == 0


def test_models_loaded_failed_and_reload_outcomes(running: Running, tmp_path: Path) -> None:
    samples = scrape(running.metrics_port)
    assert value(samples, "onnxplain_models", state="loaded") == 1  # digits
    assert value(samples, "onnxplain_models", state="failed") == 2  # garbage, norule
    before_added = value(samples, "onnxplain_model_loads_total", outcome="added")
    before_kept = value(samples, "onnxplain_model_loads_total", outcome="kept_previous")
    root = tmp_path / "models"
    shutil.copytree(DEMO, root / "second")
    (root / "digits" / "model.onnx.tmp").write_bytes(b"broken")
    (root / "digits" / "model.onnx.tmp").replace(root / "digits" / "model.onnx")
    running.admin.ReloadModels(admin_pb2.ReloadModelsRequest(), timeout=60)
    samples = scrape(running.metrics_port)
    assert value(samples, "onnxplain_models", state="loaded") == 2
    assert value(samples, "onnxplain_models", state="failed") == 2
    assert value(samples, "onnxplain_models", state="reload_failed") == 1
    assert value(samples, "onnxplain_model_loads_total", outcome="added") == before_added + 1
    assert value(samples, "onnxplain_model_loads_total", outcome="kept_previous") == (
        before_kept + 1
    )
    # A removed model's queue-depth series goes with it.
    metrics.observe_queue_depth("second", 2)
    assert ("onnxplain_queue_depth", (("model", "second"),)) in scrape(running.metrics_port)
    shutil.rmtree(root / "second")
    running.admin.ReloadModels(admin_pb2.ReloadModelsRequest(), timeout=60)
    samples = scrape(running.metrics_port)
    assert ("onnxplain_queue_depth", (("model", "second"),)) not in samples
    assert value(samples, "onnxplain_models", state="loaded") == 1


def test_queue_depth_and_batch_size_hooks(running: Running) -> None:
    metrics.observe_queue_depth("digits", 3)
    before = scrape(running.metrics_port)
    for size in (1, 4, 4, 9):
        metrics.observe_batch("digits", "guided", size)
    after = scrape(running.metrics_port)
    assert value(after, "onnxplain_queue_depth", model="digits") == 3
    labels = {"model": "digits", "method": "guided"}

    def delta(name: str, **more: str) -> float:
        return value(after, name, **labels, **more) - value(before, name, **labels, **more)

    assert delta("onnxplain_batch_size_count") == 4 and delta("onnxplain_batch_size_sum") == 18
    assert delta("onnxplain_batch_size_bucket", le="4.0") == 3
    assert delta("onnxplain_batch_size_bucket", le="8.0") == 3
    assert delta("onnxplain_batch_size_bucket", le="16.0") == 4


def test_metrics_port_flag_serves_them(tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "models" / "digits")
    flags = ("--metrics-port", "0", "--metrics-host", "127.0.0.1", "--drain-delay", "0")
    with ServeProcess(tmp_path / "models", *flags) as server:
        found: list[int] = []

        def port_logged() -> bool:
            match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", server.log())
            found.extend([int(match.group(1))] if match else [])
            return bool(match)

        wait_for(port_logged, 10, "the metrics line")
        samples = scrape(found[0])
        assert value(samples, "onnxplain_models", state="loaded") == 1
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0


def test_a_busy_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    shutil.copytree(DEMO, tmp_path / "models" / "digits")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "onnxplain", "serve", "--models", str(tmp_path / "models"),
             "--port", "0", "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 2 and f"metrics port {port}" in run.stderr
    assert "Traceback" not in run.stderr


def test_queue_and_batches_of_real_requests_are_counted(running: Running) -> None:
    """The request queue (server/core/batching.py) reports through the hooks: every run's
    samples land in the batch-size histogram, and the queue's depth is a series per model."""
    before = scrape(running.metrics_port)
    x = np.concatenate([X, X, X])  # one request of three samples
    assert running.explain("digits", x, pb.METHOD_VANILLA) == grpc.StatusCode.OK
    assert running.explain("digits", X, pb.METHOD_VANILLA) == grpc.StatusCode.OK
    after = scrape(running.metrics_port)
    labels = {"model": "digits", "method": "vanilla"}

    def delta(name: str, **more: str) -> float:
        return value(after, name, **labels, **more) - value(before, name, **labels, **more)

    # Two runs (one request each, sent one after the other), 3 + 1 samples.
    assert delta("onnxplain_batch_size_count") == 2 and delta("onnxplain_batch_size_sum") == 4
    assert ("onnxplain_queue_depth", (("model", "digits"),)) in after
    assert value(after, "onnxplain_queue_depth", model="digits") == 0  # nothing waits now
