"""TLS for the web page, from the same files as the gRPC port's (--tls-cert, --tls-key,
--tls-client-ca), so that `--http` never opens a plaintext door beside a TLS service."""

from __future__ import annotations

import ssl
from pathlib import Path


def tls_context(cert: Path, key: Path, client_ca: bytes | None = None) -> ssl.SSLContext:
    """A server context; with `client_ca`, browsers must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode("ascii"))
    return context
