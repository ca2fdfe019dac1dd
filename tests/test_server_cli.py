"""`onnxplain serve` as a process: startup, health, SIGTERM drain, device errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.server_support import make_repository

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _serve(repo: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onnxplain",
            "serve",
            "--models",
            str(repo),
            "--port",
            "0",
            "--threads",
            "1",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints it once it listens
    assert "listening on 127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
    return int(line.rsplit(":", 1)[1])


def _status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repository(tmp_path)


@pytest.fixture
def server(repo: Path) -> Iterator[subprocess.Popen[str]]:
    proc = _serve(repo, "--drain-delay", "1.5")
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_sigterm_reports_not_serving_then_exits_cleanly(server: subprocess.Popen[str]) -> None:
    port = _port(server)
    assert _status(port) == SERVING
    os.kill(server.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert _status(port) == NOT_SERVING  # still answering during the drain delay
    assert server.wait(20) == 0
    assert server.stderr is not None
    log = server.stderr.read()
    assert "draining" in log and "stopped" in log
    # The broken models were reported at startup, by name, while digits loaded.
    assert "model garbage is unavailable" in log and "model norule is unavailable" in log
    assert "model digits loaded" in log


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime has CUDA: --device cuda is expected to work here",
)
def test_device_cuda_without_cuda_fails_clearly(repo: Path) -> None:
    proc = _serve(repo, "--device", "cuda")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "listening" not in out
    assert "CUDAExecutionProvider" in err and "onnxruntime-gpu" in err


def test_a_busy_port_is_refused_not_shared(server: subprocess.Popen[str], repo: Path) -> None:
    # gRPC's default SO_REUSEPORT would let a second server bind and take half the calls.
    port = _port(server)
    second = _serve(repo, "--port", str(port))
    out, err = second.communicate(timeout=60)
    assert second.returncode == 2 and "listening" not in out
    # The last word is a one-line reason (the log above it reports the repo's broken models).
    assert err.strip().splitlines()[-1] == (
        f"onnxplain serve: could not bind 127.0.0.1:{port} (is another process using the port?)"
    )
    assert _status(port) == SERVING


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    proc = _serve(tmp_path / "absent")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "is not a folder" in err and "Traceback" not in err
