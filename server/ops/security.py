"""Who may call the service: TLS or mutual TLS on the port, and bearer tokens per call.

- TLS (`--tls-cert`, `--tls-key`) encrypts the port; with `--tls-client-ca` the server also
  demands a client certificate signed by that CA (mutual TLS), so the handshake itself refuses
  strangers.
- A token file (`--token-file`) turns on deny-by-default: every call must carry
  `authorization: Bearer <token>` with one of the file's tokens (one per line, so a new token
  can be added before the old one is removed). Only health checks are exempt (grpc.health.v1,
  the Open Inference Protocol's server live and ready), because orchestrators' probes send
  no credentials.
- Kubernetes' native gRPC probes cannot speak TLS, so `health_server` offers grpc.health.v1
  alone, in plaintext, on a port of its own.
- Files given by path are watched: a renewed certificate (cert-manager) or a new token list
  (a Kubernetes Secret update) is used from the next handshake or call, without a restart. A
  replacement that cannot be used is logged and the previous one stays in force.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2_grpc

log = logging.getLogger(__name__)

# Health checks carry no credentials (kubelet, Docker, load balancers): always let them in.
# The Open Inference Protocol's server liveness and readiness are its health checks (they
# say only whether the server is up, as grpc.health.v1 does); its per-model calls are not.
EXEMPT_PREFIX = (
    "/grpc.health.v1.Health/",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)
# How often, at most, watched files are checked for a change (one stat per file).
RECHECK_S = 1.0

T = TypeVar("T")


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


def _read_pem(path: Path, flag: str, kind: str) -> bytes:
    data = _read(path, flag)
    if b"-----BEGIN " not in data or f"{kind}-----".encode() not in data:
        raise SecurityConfigError(f"{flag} {path}: not a PEM file with a {kind}")
    return data


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The accepted tokens: one per non-empty line, surrounding whitespace ignored."""
    try:
        lines = _read(path, "--token-file").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise SecurityConfigError(f"--token-file {path}: not UTF-8 text") from None
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
    # Where the values came from, when they came from files: those are watched.
    files: SecurityFiles | None = None

    @classmethod
    def from_files(
        cls,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_client_ca: Path | None = None,
        token_file: Path | None = None,
    ) -> Security:
        files = SecurityFiles(tls_cert, tls_key, tls_client_ca, token_file)
        return replace(files.read(), files=files)

    def check_credentials(self) -> None:
        """Fail now, naming the flags, if gRPC cannot serve TLS with these files.

        Otherwise the failure surfaces as a failed bind, which reads like a busy port. The
        test is gRPC's own: a throwaway server binds a free loopback port with them.
        """
        credentials = self.credentials()
        if credentials is None:
            return
        probe = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        try:
            bound = probe.add_secure_port("127.0.0.1:0", credentials)
        except RuntimeError:
            bound = 0
        finally:
            probe.stop(None)
        if bound == 0:
            raise SecurityConfigError(
                "--tls-cert and --tls-key are not a certificate chain and its private key "
                "that gRPC can serve (is the key the certificate's? are both PEM?)"
            )

    @property
    def tls(self) -> bool:
        return self.cert_chain is not None

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for the port (re-read when their files change), or None."""
        if self.cert_chain is None or self.private_key is None:
            return None
        files = self.files
        if files is None or files.tls_cert is None:
            return grpc.ssl_server_credentials(
                [(self.private_key, self.cert_chain)],
                root_certificates=self.client_ca,
                require_client_auth=self.client_ca is not None,
            )
        watch = Watched(files.tls_paths(), files.read_tls, "the TLS certificate")

        def fetch() -> Any:  # called by gRPC before each handshake; None: no change
            renewed = watch.poll()
            if renewed is None or renewed.private_key is None or renewed.cert_chain is None:
                return None
            return grpc.ssl_server_certificate_configuration(
                [(renewed.private_key, renewed.cert_chain)], root_certificates=renewed.client_ca
            )

        initial = grpc.ssl_server_certificate_configuration(
            [(self.private_key, self.cert_chain)], root_certificates=self.client_ca
        )
        return grpc.dynamic_ssl_server_credentials(
            initial, fetch, require_client_authentication=self.client_ca is not None
        )

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        if not self.tokens:
            return []
        if not self.tls:
            log.warning("tokens are checked, but without TLS they cross the network in clear")
        token_file = self.files.token_file if self.files else None
        if token_file is None:
            return [TokenAuth(self.tokens)]
        watch = Watched((token_file,), lambda: read_tokens(token_file), "the token file")
        return [TokenAuth(self.tokens, watch)]

    def describe(self) -> str:
        """One line for the startup log; never the secrets themselves."""
        transport = "plaintext"
        if self.tls:
            transport = "mutual TLS" if self.client_ca else "TLS"
        auth = f"{len(self.tokens)} bearer token(s)" if self.tokens else "no token check"
        return f"{transport}, {auth}"


@dataclass(frozen=True)
class SecurityFiles:
    """The files behind the security flags; `read` checks them as `serve` starts."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token_file: Path | None = None

    def read(self) -> Security:
        tls = self.read_tls() if self.tls_cert or self.tls_key or self.tls_client_ca else None
        tokens = read_tokens(self.token_file) if self.token_file else ()
        return replace(tls or Security(), tokens=tokens)

    def tls_paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.tls_cert, self.tls_key, self.tls_client_ca) if p)

    def read_tls(self) -> Security:
        """The TLS part alone, checked by gRPC itself (SecurityConfigError when unusable)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SecurityConfigError("--tls-cert and --tls-key go together: give both")
        if self.tls_cert is None or self.tls_key is None:
            raise SecurityConfigError(
                "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first"
            )
        ca = self.tls_client_ca
        tls = Security(
            cert_chain=_read_pem(self.tls_cert, "--tls-cert", "CERTIFICATE"),
            private_key=_read_pem(self.tls_key, "--tls-key", "PRIVATE KEY"),
            client_ca=_read_pem(ca, "--tls-client-ca", "CERTIFICATE") if ca else None,
        )
        tls.check_credentials()
        return tls


class Watched(Generic[T]):
    """A value read from files, read again when one of them changes.

    Checks at most every RECHECK_S (a stat per file, following symlinks, so Kubernetes'
    atomic swap of a Secret's `..data` link counts). A new version that cannot be read is
    logged once and ignored: the previous value stays in force.
    """

    def __init__(self, paths: tuple[Path, ...], read: Callable[[], T], what: str) -> None:
        self._paths = paths
        self._read = read
        self._what = what
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._checked = time.monotonic()

    def poll(self) -> T | None:
        """The new value when the files changed and read well; else None."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < RECHECK_S:
                return None
            self._checked = now
            stamp = self._stamps()
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                value = self._read()
            except SecurityConfigError as exc:
                log.warning("%s changed but cannot be used; keeping the previous one: %s",
                            self._what, exc)  # fmt: skip
                return None
        log.info("%s changed: using the new one", self._what)
        return value

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append((st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(stamps)


class TokenAuth(grpc.ServerInterceptor):
    """Deny by default: a call without one of the tokens ends UNAUTHENTICATED, unread."""

    def __init__(
        self, tokens: tuple[bytes, ...], watch: Watched[tuple[bytes, ...]] | None = None
    ) -> None:
        self._tokens = tokens
        self._watch = watch

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        if self._watch is not None:
            renewed = self._watch.poll()
            if renewed is not None:
                self._tokens = renewed  # one assignment: calls see the old or the new list
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
