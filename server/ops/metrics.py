"""Prometheus metrics, off unless `onnxplain serve --metrics-port` turns them on.

The hooks are plain module functions so that any part of the server (the interceptor, the
reloader, the request queue) can report without being handed an object. Until `enable()`
runs each hook is one global read and a return: nothing is counted, and prometheus-client
is not even imported.

Label values are bounded by construction: a model label is a name from the repository or
"unknown" (a client must not be able to mint new time series by inventing model names), a
method label is a method name or "unknown", a code label a gRPC status name (for a protocol
over HTTP, the status the same answer gets over gRPC, so that one alert covers every
protocol), a protocol label one of PROTOCOLS.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN = "unknown"  # the label of a model or method the server does not know
NATIVE = "onnxplain"  # the protocol label of onnxplain's own gRPC services
# Every protocol label: onnxplain's gRPC API, the Open Inference Protocol over gRPC and
# over REST, KServe's V1 REST protocol.
PROTOCOLS = (NATIVE, "oip-grpc", "oip-rest", "kserve-v1", "vertex")

# Seconds: a tiny model answers in about a millisecond, a large one on the CPU in seconds.
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class _Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_flight: Gauge
    models: Gauge
    model_loads: Counter
    queue_depth: Gauge
    batch_size: Histogram


_metrics: _Metrics | None = None
_enable_lock = threading.Lock()


def enable() -> CollectorRegistry:
    """Start counting (idempotent); the registry that holds every onnxplain metric."""
    global _metrics
    with _enable_lock:
        if _metrics is None:
            _metrics = _create()
        return _metrics.registry


def enabled() -> bool:
    return _metrics is not None


def serve(host: str, port: int) -> tuple[Any, int]:
    """Start counting and expose /metrics over HTTP; the HTTP server and its bound port."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, host, registry=enable())
    return server, int(server.server_port)


def _create() -> _Metrics:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry(auto_describe=True)
    return _Metrics(
        registry=registry,
        requests=Counter(
            "onnxplain_requests",
            "Requests answered, by protocol, RPC, model, saliency method and gRPC status code",
            ["protocol", "rpc", "model", "method", "code"],
            registry=registry,
        ),
        latency=Histogram(
            "onnxplain_request_seconds",
            "Time from a decoded request to its answer, by protocol, RPC, model and method",
            ["protocol", "rpc", "model", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        in_flight=Gauge(
            "onnxplain_requests_in_flight", "RPCs being answered now", registry=registry
        ),
        models=Gauge(
            "onnxplain_models",
            "Models in the repository: loaded (serving), failed (not serving), and "
            "reload_failed (serving a previous version because the new files failed to load)",
            ["state"],
            registry=registry,
        ),
        model_loads=Counter(
            "onnxplain_model_loads",
            "Model (re)loads by outcome: added, updated, removed, failed, kept_previous",
            ["outcome"],
            registry=registry,
        ),
        queue_depth=Gauge(
            "onnxplain_queue_depth",
            "Requests waiting for a model's session",
            ["model"],
            registry=registry,
        ),
        batch_size=Histogram(
            "onnxplain_batch_size",
            "Samples per session run, by model and saliency method",
            ["model", "method"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        ),
    )


def observe_request(
    rpc: str, model: str, method: str, code: str, seconds: float, protocol: str = NATIVE
) -> None:
    """One answered request: its status code and latency."""
    m = _metrics
    if m is None:
        return
    m.requests.labels(protocol, rpc, model, method, code).inc()
    m.latency.labels(protocol, rpc, model, method).observe(seconds)


def request_started() -> None:
    if _metrics is not None:
        _metrics.in_flight.inc()


def request_finished() -> None:
    if _metrics is not None:
        _metrics.in_flight.dec()


def observe_models(loaded: int, failed: int, reload_failed: int) -> None:
    """The repository's state after a load or reload."""
    m = _metrics
    if m is None:
        return
    m.models.labels("loaded").set(loaded)
    m.models.labels("failed").set(failed)
    m.models.labels("reload_failed").set(reload_failed)


def observe_model_load(outcome: str) -> None:
    """One model's (re)load: added, updated, removed, failed or kept_previous."""
    if _metrics is not None:
        _metrics.model_loads.labels(outcome).inc()


def observe_queue_depth(model: str, depth: int) -> None:
    """Requests now waiting for `model` (call whenever the queue grows or shrinks)."""
    if _metrics is not None:
        _metrics.queue_depth.labels(model).set(depth)


def observe_batch(model: str, method: str, size: int) -> None:
    """One session run over `size` samples (a dynamic batch may merge several requests)."""
    if _metrics is not None:
        _metrics.batch_size.labels(model, method).observe(size)


def forget_model(model: str) -> None:
    """Drop a removed model's queue-depth series, so that it does not linger at its last value."""
    if _metrics is None:
        return
    with contextlib.suppress(KeyError):  # it never had one
        _metrics.queue_depth.remove(model)
