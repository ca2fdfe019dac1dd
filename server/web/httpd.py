"""The HTTP server: one static page, two JSON endpoints, the core's errors as status codes.

stdlib `http.server` only: the page is a demo and an operator's tool beside the gRPC
service, and the machines it runs on are often offline, so no framework and no CDN.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import (
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    RequestTooLarge,
)
from ..explainer import Explainer
from . import api

log = logging.getLogger(__name__)

# The one place where the core's errors become HTTP statuses (app.STATUS_OF does gRPC's).
STATUS_OF: dict[type[Exception], HTTPStatus] = {
    ModelNotFound: HTTPStatus.NOT_FOUND,
    ModelUnavailable: HTTPStatus.CONFLICT,
    InvalidInput: HTTPStatus.BAD_REQUEST,
    RequestTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    Overloaded: HTTPStatus.TOO_MANY_REQUESTS,
}

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

    def __init__(self, address: tuple[str, int], core: Explainer, max_upload: int) -> None:
        if ":" in address[0]:  # an IPv6 address such as "::" or "::1"
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.core = core
        self.max_upload = max_upload


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "onnxplain"
    sys_version = ""
    # A client that stops sending mid-request frees its thread after this many seconds.
    timeout = 30

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/api/models":
            self._json(HTTPStatus.OK, api.list_models(self.server.core))
        elif path in _STATIC:
            name, content_type = _STATIC[path]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no page at {path}")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/api/explain":
            self._error(HTTPStatus.NOT_FOUND, f"no endpoint at {url.path}")
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
        self._send(status, json.dumps({"error": message}).encode(), "application/json", extra)

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

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_web_page(
    core: Explainer, host: str = "127.0.0.1", port: int = 0, max_upload: int = 16 << 20
) -> WebPage:
    """Serve the page on host:port (0 picks one) in a background thread. OSError if busy."""
    server = _Server((host, port), core, max_upload)
    thread = threading.Thread(target=server.serve_forever, name="web-page", daemon=True)
    thread.start()
    return WebPage(server, thread)
