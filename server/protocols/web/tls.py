"""The web page's share of the gRPC port's security: the same TLS files and token file, and
the same rotation (a renewed certificate or token list is used without a restart, a broken
replacement is ignored), so that `--http` never opens a way round them."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from ...ops.security import Security, SecurityConfigError, Watched, read_tokens


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context; with `client_ca`, browsers must present a certificate it signed."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=client_ca)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise SecurityConfigError(
            f"the web page cannot serve TLS with these files: {exc}"
        ) from None
    return context


def current_tls(security: Security) -> Callable[[], ssl.SSLContext | None]:
    """The context to wrap the next connection in: rebuilt when the TLS files change."""
    files = security.files
    if not security.tls:
        return lambda: None
    if files is None or files.tls_cert is None or files.tls_key is None:
        raise SecurityConfigError("the web page's TLS needs the certificate as files (--tls-*)")
    cert, key, ca = files.tls_cert, files.tls_key, files.tls_client_ca
    context = tls_context(cert, key, ca)
    watch = Watched(files.tls_paths(), lambda: tls_context(cert, key, ca), "the TLS certificate")

    def current() -> ssl.SSLContext:
        nonlocal context
        context = watch.poll() or context
        return context

    return current


def current_tokens(security: Security) -> Callable[[], tuple[bytes, ...]]:
    """The accepted tokens (none: open), re-read when the token file changes."""
    tokens = security.tokens
    token_file = security.files.token_file if security.files else None
    if token_file is None:
        return lambda: tokens
    watch = Watched((token_file,), lambda: read_tokens(token_file), "the token file")

    def current() -> tuple[bytes, ...]:
        nonlocal tokens
        tokens = watch.poll() or tokens
        return tokens

    return current
