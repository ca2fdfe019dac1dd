"""The gRPC server around the core: error mapping, limits, health, reflection, draining."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from onnxplain.graph_rewrite.methods import method_names

from onnxplain.inference import grpc_service_pb2_grpc
from onnxplain.v1 import admin_pb2, admin_pb2_grpc, explain_pb2, explain_pb2_grpc
from onnxplain.v1.tensors import TensorError

from ...core.batching import QueueLimits
from ...core.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    RequestTooLarge,
    bounded,
)
from ...core.explainer import Explainer
from ...ops import metrics
from ...ops.refusals import RefusalLog
from ...ops.reload import Reloader, ReloadPending
from ...ops.security import Security
from ..oip.grpc_servicer import SERVICE_NAME as INFERENCE_SERVICE_NAME
from ..oip.grpc_servicer import InferenceServicer
from .admin import AdminServicer
from .servicer import ExplainServicer

log = logging.getLogger(__name__)

SERVICE_NAME = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
# The services whose calls the drain gate holds, by their methods' path prefix: onnxplain's
# own and the Open Inference Protocol's; health and reflection stay outside.
_GATED = ("/onnxplain.", f"/{INFERENCE_SERVICE_NAME}/")
# The metrics' protocol label, by the same prefixes; "onnxplain" for the rest.
_PROTOCOLS = {f"/{INFERENCE_SERVICE_NAME}/": "oip-grpc"}


class InvalidRequest(Exception):
    """The request body is not a valid protobuf message of the RPC's request type."""


class ShuttingDown(Exception):
    """The server is draining: it finishes the calls it has and takes no new ones."""


# The one place where the core's errors become status codes.
STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    TensorError: grpc.StatusCode.INVALID_ARGUMENT,
    RequestTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
    ReloadPending: grpc.StatusCode.DEADLINE_EXCEEDED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
}


class _Undecodable:
    """Stands in for a request whose bytes did not decode, so the handler can refuse it.

    Left to gRPC, a failed decode is INTERNAL plus a full traceback in the log for every
    bad body: a log flood anyone who reaches the port can cause, for the client's fault.
    """

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    owner = getattr(deserializer, "__self__", None)  # the message class of X.FromString
    kind = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request")

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # any way the bytes fail to decode is the client's fault
            return _Undecodable(f"the request body is not a valid {kind} message")

    return deserialize


class CallGate:
    """Counts onnxplain calls in flight, and refuses new ones once closed.

    Why: gRPC's own stop() answers CANCELLED to a call that arrives while it shuts down,
    a code clients do not retry. Closed first, the gate answers UNAVAILABLE (which they
    do retry, elsewhere or later) and lets the drain wait for the calls in flight; then
    stop() has nothing left to race with but the last few milliseconds.
    """

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._open = True
        self._active = 0

    def enter(self) -> None:
        with self._state:
            if not self._open:
                raise ShuttingDown("the server is shutting down; retry, another one will answer")
            self._active += 1

    def leave(self) -> None:
        with self._state:
            self._active -= 1
            self._state.notify_all()

    def close(self) -> None:
        with self._state:
            self._open = False

    def wait_idle(self, timeout: float) -> bool:
        """True once no call is in flight; False if `timeout` seconds passed first."""
        with self._state:
            return self._state.wait_for(lambda: self._active == 0, timeout)


class ErrorMapping(grpc.ServerInterceptor):
    """Turns the core's errors into status codes (one log line each; anything unexpected
    is INTERNAL with its traceback), reports every answer to `metrics`, and keeps the
    onnxplain services' calls behind the `gate` (health and reflection are not)."""

    def __init__(
        self,
        known_model: Callable[[str], bool] = lambda _: False,
        gate: CallGate | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        self.known_model = known_model
        self.gate = gate or CallGate()
        self.refusals = refusals or RefusalLog(log)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # health Watch and reflection streams are not ours
        deserializer = handler.request_deserializer
        return grpc.unary_unary_rpc_method_handler(
            _guarded(
                handler.unary_unary,
                handler_call_details.method,
                self.known_model,
                self.gate if handler_call_details.method.startswith(_GATED) else None,
                self.refusals,
            ),
            request_deserializer=_tolerant(deserializer) if deserializer else None,
            response_serializer=handler.response_serializer,
        )


def _status_of(exc: Exception) -> grpc.StatusCode | None:
    for kind in type(exc).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return None


def _guarded(
    behaviour: Callable[[Any, Any], Any],
    method: str,
    known_model: Callable[[str], bool],
    gate: CallGate | None,
    refusals: RefusalLog,
) -> Callable[[Any, Any], Any]:
    rpc = method.rsplit("/", 1)[-1]
    protocol = next((p for prefix, p in _PROTOCOLS.items() if method.startswith(prefix)), None)

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code, response = grpc.StatusCode.OK, None
        entered = False
        metrics.request_started()
        try:
            if gate is not None:
                gate.enter()
                entered = True
            if isinstance(request, _Undecodable):
                raise InvalidRequest(request.message)
            response = behaviour(request, context)
            return response
        except Exception as exc:
            mapped = _status_of(exc)
            if mapped is None:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", method)
                context.abort(code, "internal error; the server log has details")
            code = mapped
            if not isinstance(exc, ShuttingDown):
                # One line per refused request (rate-limited per kind), never a traceback:
                # the fault is the client's.
                kind = f"{rpc} {code.name} ({type(exc).__name__})"
                refusals.refused(
                    "%s %s (%s) from %s: %s",
                    method,
                    code.name,
                    type(exc).__name__,
                    context.peer(),
                    _one_line(exc),
                    kind=kind,
                )
            # Bounded: a message echoing a huge client string would not fit gRPC's headers.
            context.abort(code, bounded(str(exc)))
        finally:
            if entered and gate is not None:
                gate.leave()
            metrics.request_finished()
            if metrics.enabled():
                model, saliency = _labels(request, response, known_model)
                seconds = time.perf_counter() - started
                metrics.observe_request(
                    rpc, model, saliency, code.name, seconds, protocol or metrics.NATIVE
                )

    return call


def _one_line(exc: Exception, limit: int = 300) -> str:
    text = str(exc).replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit] + "..."


def _labels(request: Any, response: Any, known_model: Callable[[str], bool]) -> tuple[str, str]:
    """The model and saliency-method labels of one answered RPC, from a bounded set."""
    if isinstance(request, _Undecodable):
        return metrics.UNKNOWN, metrics.UNKNOWN
    field = next((f for f in ("model", "name", "model_name") if hasattr(request, f)), None)
    if field is None:
        model = ""  # an RPC about no model in particular (ListModels, health)
    else:
        name = getattr(request, field)
        model = name if isinstance(name, str) and known_model(name) else metrics.UNKNOWN
    # The Open Inference Protocol names the method in a parameter, Explain by name or enum.
    named = (
        _named_method(response)
        or _named_method(request)
        or getattr(response, "method_name", None)
        or getattr(request, "method_name", None)
    )
    if named:
        return model, named if named in method_names() else metrics.UNKNOWN
    wire = getattr(response, "method", None)
    if wire is None:
        wire = getattr(request, "method", None)
    if not isinstance(wire, int):
        return model, ""
    if wire == explain_pb2.METHOD_UNSPECIFIED:
        return model, "default"
    try:
        return model, explain_pb2.Method.Name(wire).removeprefix("METHOD_").lower()
    except ValueError:
        return model, metrics.UNKNOWN


def _named_method(message: Any) -> str | None:
    """The method an Open Inference Protocol message names in its parameters, if any."""
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None or not descriptor.full_name.startswith("inference."):
        return None
    if "parameters" not in descriptor.fields_by_name:  # ModelReady, ModelMetadata, ...
        return None
    value = message.parameters.get("method")
    return None if value is None else str(value.string_param)


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent: int = 1  # runs of one model at once; enforced by the core's queues


@dataclass
class Service:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    gate: CallGate = field(default_factory=CallGate)
    refusals: RefusalLog = field(default_factory=lambda: RefusalLog(log))
    _cut_short: threading.Event = field(default_factory=threading.Event)

    def drain(self, delay_s: float, grace_s: float) -> None:
        """NOT_SERVING first (so balancers look elsewhere), then finish in-flight calls."""
        self.health.enter_graceful_shutdown()
        self._cut_short.wait(delay_s)  # new requests are still served while clients notice
        self.gate.close()  # from now on new calls get UNAVAILABLE, which clients retry
        started = time.monotonic()
        self.gate.wait_idle(grace_s)
        self.server.stop(max(0.0, grace_s - (time.monotonic() - started))).wait()
        self.refusals.flush()

    def stop_now(self) -> None:
        """Cancel in-flight calls and stop, cutting a running `drain` short."""
        self._cut_short.set()
        self.server.stop(None)


def build_server(
    core: Explainer,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits = Limits(),
    reloader: Reloader | None = None,
    security: Security | None = None,
    with_reflection: bool = False,
) -> Service:
    """The started server: Explain service, health, limits, credentials; the admin service
    too when there is a `reloader`, server reflection when `with_reflection`.

    Both are opt-in: the admin service reloads the models for anyone who reaches the port,
    and reflection tells them what else it serves (`onnxplain serve --admin`, `--reflection`).
    """
    security = security or Security()  # plaintext, no token check
    workers = grpc_workers(core)
    gate, refusals = CallGate(), RefusalLog(log)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="explain"),
        # The token check first: an unauthenticated call never reaches the error mapping.
        interceptors=[
            *security.interceptors(),
            ErrorMapping(lambda name: name in core.repository.names(), gate, refusals),
        ],
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
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(core), server
    )
    services = [SERVICE_NAME, INFERENCE_SERVICE_NAME, health.SERVICE_NAME]
    if reloader is not None:
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(reloader), server)
        services.append(ADMIN_SERVICE_NAME)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if with_reflection:
        reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], server)
    credentials = security.credentials()
    try:  # grpcio returns 0 on a failed bind in some versions, raises in others
        if credentials is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    server.start()
    core.repository.observe(lambda: _publish_health(health_servicer, core.repository.ready()))
    return Service(server, health_servicer, bound, gate, refusals)


def _publish_health(health_servicer: health.HealthServicer, ready: bool) -> None:
    """SERVING only while some model can explain: a balancer or kubelet must not send
    traffic to a server whose every model failed to load (or whose folder is empty). A
    reload that brings a model back turns it SERVING again; once draining, grpc's servicer
    ignores this and stays NOT_SERVING."""
    status = health_pb2.HealthCheckResponse
    for name in ("", SERVICE_NAME, INFERENCE_SERVICE_NAME):
        health_servicer.set(name, status.SERVING if ready else status.NOT_SERVING)


def grpc_workers(core: Explainer) -> int:
    """Threads enough for every request the queues would hold or run at once, plus some
    for health checks and ListModels: each waiting call holds a thread (a sync server)."""
    limits = getattr(core, "queue_limits", QueueLimits())
    per_model = limits.max_queue + limits.instances * limits.max_rows
    return per_model * max(1, len(core.repository.names())) + 8
