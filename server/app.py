"""The gRPC server around the core: error mapping, limits, health, reflection, draining."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from onnxplain.v1 import explain_pb2, explain_pb2_grpc
from onnxplain.v1.tensors import TensorError

from .batching import QueueLimits
from .errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    RequestTooLarge,
)
from .explainer import Explainer
from .servicer import ExplainServicer

log = logging.getLogger(__name__)

SERVICE_NAME = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name

# The one place where the core's errors become status codes.
STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    TensorError: grpc.StatusCode.INVALID_ARGUMENT,
    RequestTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
}


class ErrorMapping(grpc.ServerInterceptor):
    """Turns the core's errors into status codes; anything else is INTERNAL, logged here."""

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # health Watch and reflection streams are not ours
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler.unary_unary, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _guarded(behaviour: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except tuple(STATUS_OF) as exc:
            context.abort(STATUS_OF[type(exc)], str(exc))
        except Exception:
            log.exception("%s failed", method)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has details")

    return call


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent: int = 1  # runs of one model at once; enforced by the core's queues


@dataclass
class Service:
    server: grpc.Server
    health: health.HealthServicer
    port: int

    def drain(self, delay_s: float, grace_s: float) -> None:
        """NOT_SERVING first (so balancers look elsewhere), then finish in-flight calls."""
        self.health.enter_graceful_shutdown()
        time.sleep(delay_s)  # new requests are still served while clients notice
        self.server.stop(grace_s).wait()


def build_server(
    core: Explainer, host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits()
) -> Service:
    """The started server: Explain service, health, reflection, message and RPC limits."""
    workers = grpc_workers(core)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="explain"),
        interceptors=[ErrorMapping()],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            # gRPC sets SO_REUSEPORT by default, so a second server on a busy port starts
            # "fine" and the kernel splits connections between the two. Fail to bind instead.
            ("grpc.so_reuseport", 0),
        ],
        # The core's queues decide what is refused; gRPC's own cap only guards against a
        # flood far beyond them (calls past `workers` wait for a thread, deadline-aware).
        maximum_concurrent_rpcs=4 * workers,
    )
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(ExplainServicer(core), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:  # grpcio returns 0 on a failed bind in some versions, raises in others
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Service(server, health_servicer, bound)


def grpc_workers(core: Explainer) -> int:
    """Threads enough for every request the queues would hold or run at once, plus some
    for health checks and ListModels: each waiting call holds a thread (a sync server)."""
    limits = getattr(core, "queue_limits", QueueLimits())
    per_model = limits.max_queue + limits.instances * limits.max_rows
    return per_model * max(1, len(core.repository.names())) + 8


def serve_until_signal(service: Service, drain_delay_s: float, grace_s: float) -> None:
    """Block until SIGTERM or SIGINT, then drain and return."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("draining: health NOT_SERVING, finishing in-flight requests")
    service.drain(drain_delay_s, grace_s)
    log.info("stopped")
