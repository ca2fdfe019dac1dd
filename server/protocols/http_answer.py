"""What the protocols served over HTTP (the Open Inference Protocol's REST form, KServe V1)
share: an answer as plain data, errors mapped by a protocol's own table, and metrics.

The handlers are plain functions from a request (verb, path, headers, body) to an
`HttpAnswer`; `web/httpd.py` routes to them, checks tokens and limits the body first, and
sends what they return. Nothing here reads a socket.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc

from ..core.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    RequestTooLarge,
)
from ..core.explainer import Explainer
from ..ops import metrics
from ..ops.refusals import RefusalLog

log = logging.getLogger(__name__)
# One line per refused request, rate-limited, as the gRPC port logs them.
_refusals = RefusalLog(log)

ErrorTable = Mapping[type[Exception], HTTPStatus]

# The one place where the core's errors become HTTP statuses for the serving protocols
# (Open Inference Protocol REST, KServe V1): the same answer whichever of them is asked.
# A model that failed to load is 503, as serving stacks answer (the page's own API says 409).
SERVING_STATUS_OF: dict[type[Exception], HTTPStatus] = {
    ModelNotFound: HTTPStatus.NOT_FOUND,
    ModelUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    InvalidInput: HTTPStatus.BAD_REQUEST,
    RequestTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    Overloaded: HTTPStatus.TOO_MANY_REQUESTS,
    DeadlineExceeded: HTTPStatus.GATEWAY_TIMEOUT,
    Cancelled: HTTPStatus.BAD_REQUEST,
}


@dataclass(frozen=True)
class HttpAnswer:
    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def json_answer(payload: Any, status: HTTPStatus = HTTPStatus.OK) -> HttpAnswer:
    return HttpAnswer(status, json.dumps(payload).encode())


def error_answer(status: HTTPStatus, message: str) -> HttpAnswer:
    """`{"error": message}`, the error body of both the Open Inference Protocol and V1."""
    extra = {"Retry-After": "1"} if status == HTTPStatus.TOO_MANY_REQUESTS else {}
    return HttpAnswer(status, json.dumps({"error": message}).encode(), headers=extra)


@dataclass(frozen=True)
class Metered:
    """One protocol's answers, errors mapped by its `table`, each counted in the metrics."""

    protocol: str  # one of metrics.PROTOCOLS
    table: ErrorTable

    def answer(
        self,
        core: Explainer,
        rpc: str,
        model: str,
        work: Callable[[], tuple[HttpAnswer, str]],
    ) -> HttpAnswer:
        """Run `work` (which returns the answer and the method it ran, "" for none) and
        turn the core's errors into this protocol's statuses; anything else is a 500."""
        started = time.perf_counter()
        metrics.request_started()
        method, code = "", grpc.StatusCode.OK
        try:
            answer, method = work()
            return answer
        except Exception as exc:
            status = _nearest(self.table, exc)
            code = _grpc_code(exc) or grpc.StatusCode.INTERNAL
            if status is None:
                log.exception("%s %s failed", self.protocol, rpc)
                return error_answer(
                    HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the server log has details"
                )
            _refusals.refused("%s %s %s: %s", self.protocol, rpc, status.value, exc)
            return error_answer(status, str(exc))
        finally:
            metrics.request_finished()
            if metrics.enabled():
                known = model in core.repository.names()
                label = (model if known else metrics.UNKNOWN) if model else ""
                seconds = time.perf_counter() - started
                metrics.observe_request(rpc, label, method, code.name, seconds, self.protocol)


def _nearest(table: Mapping[type[Exception], Any], exc: Exception) -> Any:
    """The entry of the nearest class in the table, so that a subclass the core adds maps."""
    return next((table[c] for c in type(exc).__mro__ if c in table), None)


def _grpc_code(exc: Exception) -> grpc.StatusCode | None:
    """The status the same error gets over gRPC: the metrics' one vocabulary of codes."""
    from .grpc.app import STATUS_OF

    return _nearest(STATUS_OF, exc)
