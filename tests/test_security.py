"""TLS, mutual TLS and bearer tokens, over real loopback sockets with certificates made here.

Every refusal is checked beside the same call succeeding with the right credentials, so a
test cannot pass because the server is simply down.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from onnxplain.client import Client, ServiceError
from onnxplain.client.client import Retry
from onnxplain.server import Explainer, Limits, Repository, SessionFactory, build_server
from onnxplain.server.ops import security as security_module
from onnxplain.server.ops.security import Security, SecurityConfigError, health_server

from helpers.certs import Pair, make_ca, make_leaf
from helpers.serve_process import ServeProcess
from helpers.server_support import DEMO, SAMPLES

NO_RETRY = Retry(total_s=0)  # a refused handshake is UNAVAILABLE: answer at once


@pytest.fixture(scope="module")
def pki() -> dict[str, Pair]:
    ca, other_ca = make_ca("onnxplain test CA"), make_ca("someone else's CA")
    return {
        "ca": ca,
        "other_ca": other_ca,
        "server": make_leaf(ca, "onnxplain server", server=True),
        "client": make_leaf(ca, "a client", server=False),
        "stranger": make_leaf(other_ca, "a stranger", server=False),
    }


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Explainer:
    root = tmp_path_factory.mktemp("models")
    (root / "digits").mkdir()
    for name in ("model.onnx", "config.toml", "labels.txt"):
        (root / "digits" / name).write_bytes((DEMO / name).read_bytes())
    return Explainer(Repository.load(root, SessionFactory("cpu", threads=1)), 4, 2)


@contextmanager
def serving(core: Explainer, security: Security) -> Iterator[str]:
    service = build_server(
        core, "127.0.0.1", 0, Limits(1 << 20, 2), security=security, with_reflection=True
    )
    try:
        yield f"127.0.0.1:{service.port}"
    finally:
        service.server.stop(None).wait()


def _models(address: str, **kwargs: object) -> list[str]:
    with Client(address, timeout=10, retry=NO_RETRY, **kwargs) as client:  # type: ignore[arg-type]
        return [m.name for m in client.models()]


def _refused(address: str, **kwargs: object) -> ServiceError:
    with pytest.raises(ServiceError) as raised:
        _models(address, **kwargs)
    return raised.value


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(core: Explainer, pki: dict[str, Pair]) -> Iterator[str]:
    security = Security(cert_chain=pki["server"].cert_pem, private_key=pki["server"].key_pem)
    with serving(core, security) as address:
        yield address


def test_tls_client_with_the_right_ca_is_served(tls_server: str, pki: dict[str, Pair]) -> None:
    assert _models(tls_server, root_ca=pki["ca"].cert_pem) == ["digits"]
    x = np.load(SAMPLES / "digit3.npy")
    with Client(tls_server, root_ca=pki["ca"].cert_pem, retry=NO_RETRY) as client:
        assert client.explain("digits", x).saliency.shape == x.shape


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: str) -> None:
    assert _refused(tls_server).code == grpc.StatusCode.UNAVAILABLE


def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: str, pki: dict[str, Pair]
) -> None:
    assert _refused(tls_server, root_ca=pki["other_ca"].cert_pem).code == (
        grpc.StatusCode.UNAVAILABLE
    )


# --- mutual TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(core: Explainer, pki: dict[str, Pair]) -> Iterator[str]:
    security = Security(
        cert_chain=pki["server"].cert_pem,
        private_key=pki["server"].key_pem,
        client_ca=pki["ca"].cert_pem,
    )
    with serving(core, security) as address:
        yield address


def test_mtls_serves_a_client_certificate_from_its_ca(
    mtls_server: str, pki: dict[str, Pair]
) -> None:
    client = pki["client"]
    names = _models(
        mtls_server,
        root_ca=pki["ca"].cert_pem,
        client_cert=client.cert_pem,
        client_key=client.key_pem,
    )
    assert names == ["digits"]


def test_mtls_refuses_a_client_without_a_certificate(
    mtls_server: str, pki: dict[str, Pair]
) -> None:
    assert _refused(mtls_server, root_ca=pki["ca"].cert_pem).code == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_client_certificate_from_another_ca(
    mtls_server: str, pki: dict[str, Pair]
) -> None:
    stranger = pki["stranger"]
    refused = _refused(
        mtls_server,
        root_ca=pki["ca"].cert_pem,
        client_cert=stranger.cert_pem,
        client_key=stranger.key_pem,
    )
    assert refused.code == grpc.StatusCode.UNAVAILABLE


# --- tokens ----------------------------------------------------------------------------------

TOKENS = (b"first-secret-token", b"second-token-during-rotation")


@pytest.fixture(scope="module")
def token_server(core: Explainer) -> Iterator[str]:
    with serving(core, Security(tokens=TOKENS)) as address:
        yield address


@pytest.mark.parametrize("token", [t.decode() for t in TOKENS])
def test_every_listed_token_is_accepted(token_server: str, token: str) -> None:
    assert _models(token_server, token=token) == ["digits"]


@pytest.mark.parametrize(
    "token", [None, "wrong", "first-secret-toke", "first-secret-tokenX", TOKENS[0].decode() + " x"]
)
def test_a_missing_or_wrong_token_is_unauthenticated(token_server: str, token: str | None) -> None:
    refused = _refused(token_server, token=token)
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in refused.details


@pytest.mark.parametrize(
    "header", ["first-secret-token", "Basic first-secret-token", "Bearer", "Bearer "]
)
def test_only_a_bearer_header_counts(token_server: str, header: str) -> None:
    with grpc.insecure_channel(token_server) as channel:
        get_model = channel.unary_unary(
            "/onnxplain.v1.ExplainService/GetModel",
            request_serializer=lambda r: r,
            response_deserializer=lambda r: r,
        )
        with pytest.raises(grpc.RpcError) as raised:
            get_model(b"", metadata=[("authorization", header)], timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_exempt_and_reflection_is_not(token_server: str) -> None:
    with grpc.insecure_channel(token_server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # A streaming method is refused too, so the API's shape is not given away.
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as raised:
            list(reflect.ServerReflectionInfo(iter([ask]), timeout=10))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with_token = [("authorization", f"Bearer {TOKENS[0].decode()}")]
        answers = list(reflect.ServerReflectionInfo(iter([ask]), metadata=with_token, timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "onnxplain.v1.ExplainService" in names


# --- configuration ---------------------------------------------------------------------------


def test_token_file_lines_and_bad_settings(tmp_path: Path, pki: dict[str, Pair]) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("  alpha \n\nbeta\n")
    assert Security.from_files(token_file=tokens).tokens == (b"alpha", b"beta")
    (tmp_path / "empty").write_text("\n \n")
    cert, key = pki["server"].write(tmp_path, "server")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    _, other_key = pki["client"].write(tmp_path, "client")
    cases = {
        "--tls-cert and --tls-key go together": {"tls_cert": cert},
        "not a PEM file with a CERTIFICATE": {"tls_cert": garbage, "tls_key": key},
        "not a PEM file with a PRIVATE KEY": {"tls_cert": cert, "tls_key": cert},
        "is the key the certificate's": {"tls_cert": cert, "tls_key": other_key},
        "mutual TLS is TLS first": {"tls_client_ca": cert},
        "--token-file": {"token_file": tmp_path / "missing"},
        "is empty": {"token_file": tmp_path / "empty"},
    }
    for message, kwargs in cases.items():
        with pytest.raises(SecurityConfigError, match=message):
            Security.from_files(**kwargs)  # type: ignore[arg-type]
    assert Security.from_files(cert, key).describe() == "TLS, no token check"


# --- the command line, end to end ------------------------------------------------------------


def test_cli_serves_mtls_with_tokens_and_plaintext_health(
    tmp_path: Path, pki: dict[str, Pair]
) -> None:
    """`onnxplain serve` with every flag; `onnxplain models` and a plaintext health probe."""
    cert, key = pki["server"].write(tmp_path, "server")
    client_cert, client_key = pki["client"].write(tmp_path, "client")
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki["ca"].cert_pem)
    tokens = tmp_path / "tokens"
    tokens.write_text("cli-token\n")
    models = tmp_path / "models"
    (models / "digits").mkdir(parents=True)
    (models / "digits" / "model.onnx").write_bytes((DEMO / "model.onnx").read_bytes())
    health_port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "onnxplain", "serve", "--models", str(models), "--port", "0",
         "--threads", "1", "--drain-delay", "0", "--tls-cert", str(cert), "--tls-key", str(key),
         "--tls-client-ca", str(ca), "--token-file", str(tokens),
         "--health-port", str(health_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on" in line, server.stderr.read() if server.stderr else ""
        address = line.rsplit(" ", 1)[1].strip()
        base = [sys.executable, "-m", "onnxplain", "models", "--server", address,
                "--tls-ca", str(ca), "--tls-cert", str(client_cert),
                "--tls-key", str(client_key), "--retry-for", "0"]  # fmt: skip
        ok = subprocess.run([*base, "--token-file", str(tokens)], capture_output=True, text=True)
        assert ok.returncode == 0 and ok.stdout.startswith("digits\t"), ok.stderr
        denied = subprocess.run(base, capture_output=True, text=True)
        assert denied.returncode == 1
        assert denied.stderr.strip().startswith("onnxplain models: UNAUTHENTICATED")
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.terminate()
        try:
            _, log = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:  # a lost SIGTERM: issue 12's signal part, not ours
            server.kill()
            _, log = server.communicate(timeout=20)
    assert "security: mutual TLS, 1 bearer token(s)" in log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- rotation without a restart ---------------------------------------------------------------


def _replace(path: Path, data: bytes) -> None:
    """Write beside, then rename over: how files should be replaced (and how Kubernetes does)."""
    fresh = path.with_suffix(".new")
    fresh.write_bytes(data)
    fresh.replace(path)


@pytest.fixture
def recheck_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security_module, "RECHECK_S", 0.0)


@pytest.mark.usefixtures("recheck_now")
def test_a_new_token_file_is_used_without_a_restart(core: Explainer, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    with serving(core, Security.from_files(token_file=tokens)) as address:
        assert _models(address, token="old-token") == ["digits"]
        _replace(tokens, b"new-token\n")
        assert _models(address, token="new-token") == ["digits"]
        assert _refused(address, token="old-token").code == grpc.StatusCode.UNAUTHENTICATED
        # A broken replacement (empty) is logged and ignored: the last good list stays.
        _replace(tokens, b"\n")
        assert _models(address, token="new-token") == ["digits"]


@pytest.mark.usefixtures("recheck_now")
def test_a_renewed_certificate_is_used_without_a_restart(
    core: Explainer, tmp_path: Path, pki: dict[str, Pair]
) -> None:
    cert, key = pki["server"].write(tmp_path, "server")
    with serving(core, Security.from_files(cert, key)) as address:
        assert _models(address, root_ca=pki["ca"].cert_pem) == ["digits"]
        # Renewed by another CA, so that which certificate a handshake got is plain to see.
        renewed = make_leaf(pki["other_ca"], "onnxplain server, renewed", server=True)
        _replace(key, renewed.key_pem)
        _replace(cert, renewed.cert_pem)
        assert _models(address, root_ca=pki["other_ca"].cert_pem) == ["digits"]
        assert _refused(address, root_ca=pki["ca"].cert_pem).code == grpc.StatusCode.UNAVAILABLE
        # Half a renewal (a key that is not the certificate's) is refused; the last good pair
        # keeps serving.
        _replace(key, pki["client"].key_pem)
        assert _models(address, root_ca=pki["other_ca"].cert_pem) == ["digits"]


def test_the_plaintext_health_port_follows_the_drain(core: Explainer, pki: dict[str, Pair]) -> None:
    """Probes read the main server's statuses: a draining pod leaves the Service at once."""
    security = Security(cert_chain=pki["server"].cert_pem, private_key=pki["server"].key_pem)
    service = build_server(core, "127.0.0.1", 0, Limits(1 << 20, 2), security)
    port = _free_port()
    probe_server = health_server(service.health, "127.0.0.1", port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest()
            assert stub.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            service.health.enter_graceful_shutdown()
            status = stub.Check(check, timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            # It serves health alone: the Explain service is not reachable through it.
            list_models = channel.unary_unary("/onnxplain.v1.ExplainService/ListModels")
            with pytest.raises(grpc.RpcError) as raised:
                list_models(b"", timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        probe_server.stop(None)
        service.server.stop(None).wait()


# --- reflection and the admin service: opt-in ---------------------------------------------


def _services(address: str, metadata: list[tuple[str, str]] | None = None) -> set[str]:
    """The services reflection lists; UNIMPLEMENTED (raised) when reflection is off."""
    with grpc.insecure_channel(address) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = list(reflect.ServerReflectionInfo(iter([ask]), metadata=metadata, timeout=10))
    return {s.name for s in answers[0].list_services_response.service}


def _reload_code(address: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        reload = channel.unary_unary("/onnxplain.v1.AdminService/ReloadModels")
        try:
            reload(b"", timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _one_model_repository(root: Path) -> Path:
    (root / "digits").mkdir(parents=True)
    (root / "digits" / "model.onnx").write_bytes((DEMO / "model.onnx").read_bytes())
    return root


def test_serve_offers_neither_reflection_nor_admin_by_default(tmp_path: Path) -> None:
    """Before: both answered anyone who reached the port (and the container binds 0.0.0.0)."""
    with ServeProcess(_one_model_repository(tmp_path / "models"), "--drain-delay", "0") as server:
        with pytest.raises(grpc.RpcError) as raised:
            _services(server.address)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert _reload_code(server.address) == grpc.StatusCode.UNIMPLEMENTED
        assert _models(server.address) == ["digits"]  # and the service itself answers


def test_reflection_and_admin_when_asked_for_on_loopback(tmp_path: Path) -> None:
    flags = ("--drain-delay", "0", "--reflection", "--admin")
    with ServeProcess(_one_model_repository(tmp_path / "models"), *flags) as server:
        services = _services(server.address)
        assert {"onnxplain.v1.ExplainService", "onnxplain.v1.AdminService"} <= services
        assert "grpc.reflection.v1alpha.ServerReflection" in services
        assert _reload_code(server.address) == grpc.StatusCode.OK


def test_admin_and_reflection_stay_behind_the_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("admin-token\n")
    flags = ("--drain-delay", "0", "--reflection", "--admin", "--token-file", str(tokens))
    with ServeProcess(_one_model_repository(tmp_path / "models"), *flags) as server:
        assert _reload_code(server.address) == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as raised:
            _services(server.address)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with_token = [("authorization", "Bearer admin-token")]
        assert "onnxplain.v1.AdminService" in _services(server.address, with_token)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.org"])
def test_admin_on_an_open_host_needs_a_token_file(tmp_path: Path, host: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "onnxplain", "serve", "--models", str(tmp_path), "--admin",
         "--host", host, "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"--admin on --host {host} without --token-file" in done.stderr, done.stderr
    assert "add --token-file, or bind a loopback --host" in done.stderr


def test_build_server_serves_reflection_only_when_asked(core: Explainer) -> None:
    for asked in (False, True):
        service = build_server(core, "127.0.0.1", 0, with_reflection=asked)
        try:
            address = f"127.0.0.1:{service.port}"
            if asked:
                assert "onnxplain.v1.ExplainService" in _services(address)
            else:
                with pytest.raises(grpc.RpcError) as raised:
                    _services(address)
                assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            service.server.stop(None).wait()
