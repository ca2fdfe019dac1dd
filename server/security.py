"""Who may call the service: TLS or mutual TLS on the port, and bearer tokens per call.

- TLS (`--tls-cert`, `--tls-key`) encrypts the port; with `--tls-client-ca` the server also
  demands a client certificate signed by that CA (mutual TLS), so the handshake itself refuses
  strangers.
- A token file (`--token-file`) turns on deny-by-default: every call must carry
  `authorization: Bearer <token>` with one of the file's tokens (one per line, so a new token
  can be added before the old one is removed). Only grpc.health.v1 is exempt, because
  orchestrators' probes send no credentials.
- Kubernetes' native gRPC probes cannot speak TLS, so `health_server` offers grpc.health.v1
  alone, in plaintext, on a port of its own.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

log = logging.getLogger(__name__)

# Health checks carry no credentials (kubelet, Docker, load balancers): always let them in.
EXEMPT_PREFIX = "/grpc.health.v1.Health/"


class SecurityConfigError(Exception):
    """A TLS or token setting that cannot work; the message names the flag and the file."""


def _read(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{flag} {path}: {exc.strerror}") from None
    if not data.strip():
        raise SecurityConfigError(f"{flag} {path}: the file is empty")
    return data


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The accepted tokens: one per non-empty line, surrounding whitespace ignored."""
    lines = _read(path, "--token-file").decode("utf-8", errors="strict").splitlines()
    tokens = tuple(line.strip().encode() for line in lines if line.strip())
    if not tokens:
        raise SecurityConfigError(f"--token-file {path}: no token in the file")
    return tokens


@dataclass(frozen=True)
class Security:
    """The server's transport credentials and token check; `Security()` is plaintext, open."""

    cert_chain: bytes | None = None
    private_key: bytes | None = None
    client_ca: bytes | None = None
    tokens: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def from_files(
        cls,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_client_ca: Path | None = None,
        token_file: Path | None = None,
    ) -> Security:
        if (tls_cert is None) != (tls_key is None):
            raise SecurityConfigError("--tls-cert and --tls-key go together: give both")
        if tls_client_ca is not None and tls_cert is None:
            raise SecurityConfigError(
                "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first"
            )
        return cls(
            cert_chain=_read(tls_cert, "--tls-cert") if tls_cert else None,
            private_key=_read(tls_key, "--tls-key") if tls_key else None,
            client_ca=_read(tls_client_ca, "--tls-client-ca") if tls_client_ca else None,
            tokens=read_tokens(token_file) if token_file else (),
        )

    @property
    def tls(self) -> bool:
        return self.cert_chain is not None

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for the port, or None for plaintext."""
        if self.cert_chain is None or self.private_key is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        if not self.tokens:
            return []
        if not self.tls:
            log.warning("tokens are checked, but without TLS they cross the network in clear")
        return [TokenAuth(self.tokens)]

    def describe(self) -> str:
        """One line for the startup log; never the secrets themselves."""
        transport = "plaintext"
        if self.tls:
            transport = "mutual TLS" if self.client_ca else "TLS"
        auth = f"{len(self.tokens)} bearer token(s)" if self.tokens else "no token check"
        return f"{transport}, {auth}"


class TokenAuth(grpc.ServerInterceptor):
    """Deny by default: a call without one of the tokens ends UNAUTHENTICATED, unread."""

    def __init__(self, tokens: tuple[bytes, ...]) -> None:
        self._tokens = tokens

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIX):
            return handler
        if self._accepts(handler_call_details.invocation_metadata or ()):
            return handler
        return _refusal(handler, method)

    def _accepts(self, metadata: Any) -> bool:
        given = [value for key, value in metadata if key == "authorization"]
        if len(given) != 1 or not isinstance(given[0], str):
            return False
        scheme, _, token = given[0].partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        presented = token.strip().encode()
        # compare_digest against every token, so the time taken says nothing about which one
        # (or how much of one) matched.
        matches = [hmac.compare_digest(presented, known) for known in self._tokens]
        return any(matches)


def _refusal(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only refuses."""
    reason = f"{method} needs a valid token: send 'authorization: Bearer <token>'"

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def health_server(health_servicer: health.HealthServicer, host: str, port: int) -> grpc.Server:
    """grpc.health.v1 alone, plaintext, sharing the main server's statuses (so a drain shows).

    For probes that cannot do TLS or send tokens (Kubernetes' native gRPC probes). It serves
    nothing but health, so it reveals nothing but whether the server is up.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
        options=[("grpc.so_reuseport", 0)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"could not bind the health port {host}:{port}")
    server.start()
    return server
