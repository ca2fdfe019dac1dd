"""The HTTP server: one static page, its JSON endpoints, the core's errors as status codes;
and the serving protocols' HTTP endpoints (Open Inference Protocol REST, KServe V1), routed
to their own modules (`protocols/oip/rest.py`, `protocols/kserve_v1.py`).

stdlib `http.server` only: the page is a demo and an operator's tool beside the gRPC
service, and the machines it runs on are often offline, so no framework and no CDN.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...core.errors import (
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    RequestTooLarge,
    bounded,
)
from ...core.explainer import Explainer
from ...ops.security import Security
from .. import kserve_v1, vertex
from ..http_answer import HttpAnswer
from ..oip import rest as oip_rest
from . import api
from .tls import current_tls, current_tokens

log = logging.getLogger(__name__)

# The one place where the core's errors become HTTP statuses (app.STATUS_OF does gRPC's).
STATUS_OF: dict[type[Exception], HTTPStatus] = {
    ModelNotFound: HTTPStatus.NOT_FOUND,
    ModelUnavailable: HTTPStatus.CONFLICT,
    InvalidInput: HTTPStatus.BAD_REQUEST,
    RequestTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    Overloaded: HTTPStatus.TOO_MANY_REQUESTS,
}

# /api/models/NAME/samples[/FILE]: a model's sample images (api.list_samples, api.sample).
_MODEL_PREFIX = "/api/models/"

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}

# The page loads only its own files; overlays arrive as data: URLs, previews as blob: URLs.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck browser connection must not block shutdown

    def __init__(
        self, address: tuple[str, int], core: Explainer, max_upload: int, security: Security
    ) -> None:
        if ":" in address[0]:  # an IPv6 address such as "::" or "::1"
            self.address_family = socket.AF_INET6
        # Both read their files first, so a bad certificate fails here, before the bind.
        self.tls = current_tls(security)
        self.tokens = current_tokens(security)
        self.scheme = "https" if security.tls else "http"
        super().__init__(address, _Handler)
        self.core = core
        self.max_upload = max_upload

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        context = self.tls()
        if context is None:
            return connection, address
        # Wrapping does no I/O: the handshake runs on the request's own thread (at its first
        # read, under the handler's timeout), so one silent client stalls no one else.
        wrapped = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            # A failed TLS handshake or a dropped connection is the client's business: one
            # line, not socketserver's traceback on stderr.
            log.info("web page: connection from %s failed: %s", client_address, error)
        else:
            log.exception("web page: a request from %s failed", client_address)

    def authorized(self, header: str | None) -> bool:
        """Open without tokens; else `Authorization: Bearer <one of the tokens>`."""
        tokens = self.tokens()
        if not tokens:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        presented = token.strip().encode()
        # Every token is compared in full, so the time taken says nothing about a match.
        return any([hmac.compare_digest(presented, known) for known in tokens])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "onnxplain"
    sys_version = ""
    # A client that stops sending mid-request frees its thread after this many seconds.
    timeout = 30

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if self._protocol("GET", path):
            return
        if path == "/api/models":
            if self._authorized():
                self._json(HTTPStatus.OK, api.list_models(self.server.core))
        elif path.startswith(_MODEL_PREFIX):
            if self._authorized():
                self._sample_route(path)
        elif path in _STATIC:
            name, content_type = _STATIC[path]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no page at {path}")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if self._protocol("POST", url.path):
            return
        if url.path != "/api/explain":
            self._error(HTTPStatus.NOT_FOUND, f"no endpoint at {url.path}")
            return
        if not self._authorized():
            return
        body = self._body()
        if body is None:
            return
        params = dict(parse_qsl(url.query))
        try:
            self._json(HTTPStatus.OK, api.explain(self.server.core, params, body))
        except tuple(STATUS_OF) as exc:
            # The nearest class in the table, so that a subclass the core adds maps too.
            status = next(STATUS_OF[c] for c in type(exc).__mro__ if c in STATUS_OF)
            self._error(status, str(exc))
        except Exception:
            log.exception("web page: explain failed")
            self._error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the server log has details"
            )

    def _sample_route(self, path: str) -> None:
        """GET /api/models/NAME/samples (the list) and /api/models/NAME/samples/FILE (one).

        Split before unquoting, so an encoded slash stays inside its part, where the api
        refuses it; a path with more parts (`..` among them) matches no route."""
        parts = [unquote(p) for p in path[len(_MODEL_PREFIX) :].split("/")]
        try:
            if len(parts) == 2 and parts[1] == api.SAMPLES_FOLDER:
                self._json(HTTPStatus.OK, api.list_samples(self.server.core, parts[0]))
            elif len(parts) == 3 and parts[1] == api.SAMPLES_FOLDER:
                body, content_type = api.sample(self.server.core, parts[0], parts[2])
                self._send(HTTPStatus.OK, body, content_type)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no endpoint at {path}")
        except tuple(STATUS_OF) as exc:
            status = next(STATUS_OF[c] for c in type(exc).__mro__ if c in STATUS_OF)
            self._error(status, str(exc))
        except Exception:
            log.exception("web page: sample request failed")
            self._error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the server log has details"
            )

    def _protocol(self, verb: str, path: str) -> bool:
        """Answer a request of a serving protocol (Open Inference Protocol v2, KServe V1);
        False when `path` is none of theirs. Tokens and the upload limit apply as to the
        page's API; the protocols' health checks are open, as grpc.health.v1 is."""
        core = self.server.core
        if oip_rest.handles(path):
            if path not in oip_rest.OPEN_PATHS and not self._authorized():
                return True
            body = self._body() if verb == "POST" else b""
            if body is not None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._answer(oip_rest.answer(core, verb, path, headers, body))
            return True
        if kserve_v1.handles(path):
            if not self._authorized():
                return True
            body = self._body() if verb == "POST" else b""
            if body is not None:
                self._answer(kserve_v1.answer(core, verb, path, body))
            return True
        if vertex.handles(path):
            if not self._authorized():
                return True
            body = self._body() if verb == "POST" else b""
            if body is not None:
                self._answer(vertex.answer(core, verb, path, body))
            return True
        return False

    def _answer(self, answer: HttpAnswer) -> None:
        self._send(answer.status, answer.body, answer.content_type, answer.headers)

    def _authorized(self) -> bool:
        """The static page is open (it holds no data); the API needs a token when set."""
        if self.server.authorized(self.headers.get("Authorization")):
            return True
        self.close_connection = True  # an unread body must not be parsed as a request
        self._error(
            HTTPStatus.UNAUTHORIZED,
            "this server needs a token: send 'Authorization: Bearer <token>'",
        )
        return False

    def _body(self) -> bytes | None:
        """The upload, or None after answering why it was refused (unread, so unbuffered)."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length")
            return None
        size = int(length)
        if size > self.server.max_upload:
            self.close_connection = True  # the unread body must not be parsed as a request
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the upload is {size} bytes; this server takes at most {self.server.max_upload}",
            )
            return None
        body = self.rfile.read(size)
        if len(body) < size:  # the client closed early; a truncated image must not be decoded
            self.close_connection = True
            self._error(
                HTTPStatus.BAD_REQUEST, f"the upload ended after {len(body)} of {size} bytes"
            )
            return None
        return body

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        # Overloaded is brief (one explanation finishing frees a slot): say when to retry.
        extra = {"Retry-After": "1"} if status == HTTPStatus.TOO_MANY_REQUESTS else {}
        if status == HTTPStatus.UNAUTHORIZED:
            extra = {"WWW-Authenticate": 'Bearer realm="onnxplain"'}
        # Bounded: a message may echo a client's string (a model name, a path) of any size.
        body = json.dumps({"error": bounded(message)}).encode()
        self._send(status, body, "application/json", extra)

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, extra: Mapping[str, str] = {}
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("web %s " + format, self.address_string(), *args)


@dataclass
class WebPage:
    """A running page server; `stop` closes its socket and waits for its thread."""

    server: _Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def scheme(self) -> str:
        return self.server.scheme

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_web_page(
    core: Explainer,
    host: str = "127.0.0.1",
    port: int = 0,
    max_upload: int = 16 << 20,
    security: Security | None = None,
) -> WebPage:
    """Serve the page on host:port (0 picks one) in a background thread. OSError if the port
    is busy, SecurityConfigError if the TLS files do not work.

    `security` is the gRPC port's (`Security.from_files`): its tokens and TLS files guard the
    page too, and their renewals reach it as they reach the gRPC port.
    """
    server = _Server((host, port), core, max_upload, security or Security())
    thread = threading.Thread(target=server.serve_forever, name="web-page", daemon=True)
    thread.start()
    return WebPage(server, thread)
