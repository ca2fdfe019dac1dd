"""Reloading the model repository through the admin RPC, over a real socket: new, changed,
broken and removed models, with the old version serving while the new one loads. The
oracle is each model file run straight in onnxruntime."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnxplain.client import Client, ServiceError
from onnxplain.server import Explainer, Limits, Repository, SessionFactory, build_server
from onnxplain.server.ops import reload as reload_module
from onnxplain.server.ops.reload import Reloader, snapshot

from onnxplain.cli import main
from onnxplain.inference import grpc_service_pb2 as oip_pb
from onnxplain.inference import grpc_service_pb2_grpc as oip_grpc
from onnxplain.v1 import admin_pb2, admin_pb2_grpc, explain_pb2_grpc
from onnxplain.v1 import explain_pb2 as pb

from helpers.server_support import DEMO, SAMPLES, direct_explain, save_variant

X = np.load(SAMPLES / "digit7.npy")
Outcome = admin_pb2.ReloadOutcome


class Running:
    """A server with a reloader over a repository folder, and clients for both services."""

    def __init__(self, root: Path) -> None:
        sessions = SessionFactory("cpu", threads=1)
        loaded = snapshot(root)
        self.repository = Repository.load(root, sessions)
        self.reloader = Reloader(root, self.repository, sessions, loaded)
        core = Explainer(self.repository, max_batch=4, max_concurrent=4)
        self.service = build_server(
            core, "127.0.0.1", 0, Limits(), self.reloader, with_reflection=True
        )
        address = f"127.0.0.1:{self.service.port}"
        self.channel = grpc.insecure_channel(address)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.explain = explain_pb2_grpc.ExplainServiceStub(self.channel)
        self.client = Client(address, timeout=30)

    def reload(self) -> dict[str, tuple[int, str]]:
        response = self.admin.ReloadModels(admin_pb2.ReloadModelsRequest(), timeout=60)
        return {c.name: (c.outcome, c.error) for c in response.changes}

    def models(self) -> dict[str, pb.ModelInfo]:
        response = self.explain.ListModels(pb.ListModelsRequest(), timeout=10)
        return {m.name: m for m in response.models}

    def saliency(self, model: str) -> np.ndarray:
        return self.client.explain(model, X, method="guided").saliency

    def close(self) -> None:
        self.client.close()
        self.channel.close()
        self.reloader.close()
        self.service.server.stop(None).wait()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(DEMO, tmp_path / "models" / "digits")
    return tmp_path / "models"


@pytest.fixture
def running(root: Path) -> Iterator[Running]:
    server = Running(root)
    yield server
    server.close()


def expected(model_file: Path) -> np.ndarray:
    return direct_explain("guided", X, model_file=model_file)[0]


def replace_by_rename(source: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, partial)
    partial.replace(target)


def test_reload_adds_updates_keeps_previous_fails_and_removes(
    running: Running, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = DEMO / "model.onnx"
    variant = save_variant(tmp_path / "variant.onnx")
    assert not np.allclose(expected(original), expected(variant), atol=1e-3)  # a real change
    np.testing.assert_allclose(running.saliency("digits"), expected(original), atol=1e-6)
    assert running.reload() == {}  # nothing changed on disk

    # A new model folder, built under a dot name and renamed into place.
    (root / ".digits2").mkdir()
    replace_by_rename(variant, root / ".digits2" / "model.onnx")
    (root / ".digits2").rename(root / "digits2")
    # A changed model file, replaced by rename.
    replace_by_rename(variant, root / "digits" / "model.onnx")
    assert running.reload() == {
        "digits2": (Outcome.RELOAD_OUTCOME_ADDED, ""),
        "digits": (Outcome.RELOAD_OUTCOME_UPDATED, ""),
    }
    np.testing.assert_allclose(running.saliency("digits2"), expected(variant), atol=1e-6)
    np.testing.assert_allclose(running.saliency("digits"), expected(variant), atol=1e-6)

    # A broken new version: the previous one keeps serving, listed with the reason.
    (root / "garbage.onnx").write_bytes(b"this is not an ONNX model")
    replace_by_rename(root / "garbage.onnx", root / "digits" / "model.onnx")
    (root / "garbage.onnx").unlink()
    # A new model that cannot load at all: listed unavailable, with the reason.
    (root / "broken").mkdir()
    (root / "broken" / "model.onnx").write_bytes(b"nor is this")
    changes = running.reload()
    assert {n: c[0] for n, c in changes.items()} == {
        "digits": Outcome.RELOAD_OUTCOME_KEPT_PREVIOUS,
        "broken": Outcome.RELOAD_OUTCOME_FAILED,
    }
    for name in ("digits", "broken"):
        assert "not an ONNX model" in changes[name][1] and str(root) not in changes[name][1]
    models = running.models()
    assert models["digits"].available and "not an ONNX model" in models["digits"].reload_error
    assert not models["broken"].available and "not an ONNX model" in models["broken"].error
    np.testing.assert_allclose(running.saliency("digits"), expected(variant), atol=1e-6)
    summary = {m.name: m for m in running.client.models()}["digits"]
    assert summary.available and "not an ONNX model" in summary.reload_error
    assert main(["models", "--server", f"127.0.0.1:{running.service.port}"]) == 0
    (line,) = [li for li in capsys.readouterr().out.splitlines() if li.startswith("digits\t")]
    assert "newer files failed to load: model.onnx is not an ONNX model" in line

    # The fixed file clears the reason; a removed folder stops being served.
    replace_by_rename(original, root / "digits" / "model.onnx")
    shutil.rmtree(root / "digits2")
    assert running.reload() == {
        "digits2": (Outcome.RELOAD_OUTCOME_REMOVED, ""),
        "digits": (Outcome.RELOAD_OUTCOME_UPDATED, ""),
    }
    assert running.models()["digits"].reload_error == ""
    np.testing.assert_allclose(running.saliency("digits"), expected(original), atol=1e-6)
    with pytest.raises(ServiceError) as info:
        running.saliency("digits2")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert set(running.models()) == {"digits", "broken"}


def test_the_old_version_serves_while_the_new_one_loads(
    running: Running, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variant = save_variant(tmp_path / "variant.onnx")
    entered, gate = threading.Event(), threading.Event()
    real_load = reload_module.load_model

    def gated_load(folder: Path, sessions: SessionFactory) -> object:
        entered.set()
        assert gate.wait(30)
        return real_load(folder, sessions)

    monkeypatch.setattr(reload_module, "load_model", gated_load)
    replace_by_rename(variant, root / "digits" / "model.onnx")
    ticket = running.reloader.request()
    assert entered.wait(30)
    # Mid-reload: still the old weights, answered at once.
    np.testing.assert_allclose(running.saliency("digits"), expected(DEMO / "model.onnx"), atol=1e-6)
    assert running.models()["digits"].available
    gate.set()
    changes = running.reloader.wait(ticket, timeout=60)
    assert changes is not None and [c.name for c in changes] == ["digits"]
    np.testing.assert_allclose(running.saliency("digits"), expected(variant), atol=1e-6)


def test_reload_requests_during_a_reload_are_served_by_one_more(
    running: Running, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    entered, gate = threading.Event(), threading.Event()
    real_load = reload_module.load_model

    def counting_load(folder: Path, sessions: SessionFactory) -> object:
        calls.append(folder.name)
        entered.set()
        assert gate.wait(30)
        return real_load(folder, sessions)

    monkeypatch.setattr(reload_module, "load_model", counting_load)
    shutil.copytree(DEMO, root / "first")
    first = running.reloader.request()
    assert entered.wait(30)
    # Three requests while "first" loads, and a change made before them.
    shutil.copytree(DEMO, root / "second")
    later = [running.reloader.request() for _ in range(3)]
    gate.set()
    assert [c.name for c in running.reloader.wait(first, 60) or []] == ["first"]
    for ticket in later:
        assert [c.name for c in running.reloader.wait(ticket, 60) or []] == ["second"]
    assert calls == ["first", "second"]  # one more reload served all three


def test_admin_service_is_listed_by_reflection(running: Running) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = stub.ServerReflectionInfo(iter([request]), timeout=10)
    names = {s.name for s in response.list_services_response.service}
    assert "onnxplain.v1.AdminService" in names and "onnxplain.v1.ExplainService" in names


def test_a_replacement_being_written_is_not_a_change(running: Running, root: Path) -> None:
    (root / "digits" / "model.onnx.tmp").write_bytes(b"half a model")
    (root / "digits" / ".model.onnx.swp").write_bytes(b"an editor's")
    assert running.reload() == {}
    (root / "digits" / "model.onnx.tmp").replace(root / "digits" / "model.onnx")
    assert running.reload()["digits"][0] == Outcome.RELOAD_OUTCOME_KEPT_PREVIOUS


def test_a_reload_asked_without_a_deadline_waits_for_the_reload(
    running: Running, root: Path
) -> None:
    """grpcurl sends no deadline unless told (-max-time): the server's remaining time is
    then beyond what a lock wait takes, which made the call INTERNAL (OverflowError)."""
    shutil.copytree(root / "digits", root / "digits_copy")
    response = running.admin.ReloadModels(admin_pb2.ReloadModelsRequest())  # no timeout
    changes = {c.name: c.outcome for c in response.changes}
    assert changes == {"digits_copy": Outcome.RELOAD_OUTCOME_ADDED}


def test_health_is_serving_only_while_some_model_can_explain(tmp_path: Path) -> None:
    """A folder with no loadable model answers NOT_SERVING (a kubelet or balancer must not
    route to it); a reload that brings a model in turns it SERVING, and losing the last
    loadable model turns it back. OIP's ServerReady says the same."""
    root = tmp_path / "models"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "model.onnx").write_bytes(b"not a model")
    server = Running(root)
    health = health_pb2_grpc.HealthStub(server.channel)
    oip = oip_grpc.GRPCInferenceServiceStub(server.channel)

    def statuses() -> set[int]:
        names = ("", "onnxplain.v1.ExplainService", "inference.GRPCInferenceService")
        request = health_pb2.HealthCheckRequest
        return {health.Check(request(service=n), timeout=10).status for n in names}

    def oip_ready() -> bool:
        return bool(oip.ServerReady(oip_pb.ServerReadyRequest(), timeout=10).ready)

    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        (health_pb2.HealthCheckResponse.NOT_SERVING),
    )
    try:
        assert statuses() == {not_serving} and not oip_ready()
        shutil.copytree(DEMO, root / "digits")
        assert server.reload() == {"digits": (Outcome.RELOAD_OUTCOME_ADDED, "")}
        assert statuses() == {serving} and oip_ready()
        shutil.rmtree(root / "digits")
        assert server.reload() == {"digits": (Outcome.RELOAD_OUTCOME_REMOVED, "")}
        assert statuses() == {not_serving} and not oip_ready()
    finally:
        server.close()
