"""A Python client for the Explain service: numpy arrays and image files in, arrays out."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

_METHODS = {
    None: pb.METHOD_UNSPECIFIED,
    "vanilla": pb.METHOD_VANILLA,
    "deconvnet": pb.METHOD_DECONVNET,
    "guided": pb.METHOD_GUIDED,
}
_METHOD_NAMES = {wire: name for name, wire in _METHODS.items() if name}


class ServiceError(Exception):
    """The server refused or failed a call; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Explanation:
    saliency: np.ndarray  # shaped like the model input
    scores: np.ndarray  # the explained output, e.g. logits
    targets: np.ndarray  # the class explained per sample
    labels: list[str]  # the targets' labels, empty when the model has none
    method: str
    heatmap_png: bytes | None = None


@dataclass(frozen=True)
class ModelSummary:
    name: str
    available: bool
    error: str
    input_shape: tuple[int, ...]  # -1 where a dimension is not fixed
    output_shape: tuple[int, ...]
    labels: tuple[str, ...]
    default_method: str
    takes_images: bool
    # Set when newer files for the model failed to load: the version described still serves.
    reload_error: str = ""


class Client:
    """`Client("host:port")`; use as a context manager, or call close().

    Plaintext by default. `tls=True` (or any of `root_ca`, `client_cert`) speaks TLS: `root_ca`
    is the PEM CA that signed the server's certificate (default: the system's roots);
    `client_cert` and `client_key` answer a server that demands mutual TLS. `token` is sent
    with every call as `authorization: Bearer <token>`. `retry` says how long a call keeps
    trying while the server is UNAVAILABLE (restarting, or a replica gone). `channel_options`
    go to gRPC as they are, e.g. `[("grpc.lb_policy_name", "round_robin")]` to spread calls
    over every address of a `dns:///` target (a Kubernetes headless Service).
    """

    def __init__(
        self,
        target: str,
        timeout: float | None = 60.0,
        max_message_mb: int = 64,
        *,
        tls: bool = False,
        root_ca: bytes | str | Path | None = None,
        client_cert: bytes | str | Path | None = None,
        client_key: bytes | str | Path | None = None,
        token: str | None = None,
        retry: Retry | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ):
        size = max_message_mb * 1024 * 1024
        options = [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            *channel_options,
        ]
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        if tls or root_ca is not None or client_cert is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(root_ca),
                private_key=_pem(client_key),
                certificate_chain=_pem(client_cert),
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token.strip()}"),) if token else ()
        )
        self._stub = explain_pb2_grpc.ExplainServiceStub(self._channel)
        self.timeout = timeout
        self.retry = retry if retry is not None else Retry()

    def explain(
        self,
        model: str,
        data: np.ndarray | str | Path | bytes,
        method: str | None = None,
        targets: int | Sequence[int] | None = None,
        heatmap: bool = False,
    ) -> Explanation:
        """Saliency of `targets` (default: each sample's top class) for an array or image.

        `data` is a preprocessed input array, a path to an .npy file or to a PNG/JPEG image,
        or the bytes of an encoded image; `method` is vanilla, deconvnet or guided (None:
        the model's default).
        """
        if method not in _METHODS:
            raise ValueError(f"unknown method {method!r}; use vanilla, deconvnet or guided")
        request = pb.ExplainRequest(
            model=model, method=_METHODS[method], targets=_targets(targets), heatmap=heatmap
        )
        _set_input(request, data)
        response = self._call(self._stub.Explain, request)
        return Explanation(
            saliency=to_array(response.saliency),
            scores=to_array(response.scores),
            targets=np.asarray(response.targets, dtype=np.int64),
            labels=list(response.target_labels),
            method=_METHOD_NAMES.get(response.method, ""),
            heatmap_png=response.heatmap_png or None,
        )

    def models(self) -> list[ModelSummary]:
        response = self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [_summary(info) for info in response.models]

    def model(self, name: str) -> ModelSummary:
        return _summary(self._call(self._stub.GetModel, pb.GetModelRequest(name=name)).model)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: grpc.UnaryUnaryMultiCallable, request: object) -> Any:
        try:
            return call_with_retries(method, request, self.timeout, self.retry, self._metadata)
        except grpc.RpcError as exc:
            raise ServiceError(exc.code(), exc.details() or "") from None


@dataclass(frozen=True)
class Retry:
    """Exponential backoff on UNAVAILABLE: waits of `first_s`, x`factor`, at most `max_wait_s`
    each, until `total_s` have passed since the first attempt; `Retry(total_s=0)` never retries.

    The default (10 s) covers a server restart (0.4 s on an idle machine, measured 2-4.5 s on
    a loaded one, more for large models) and a replica leaving a load balancer; a client of a
    server that is down for good learns it after those 10 s.
    """

    total_s: float = 10.0
    first_s: float = 0.05
    factor: float = 2.0
    max_wait_s: float = 1.0

    def waits(self) -> Iterator[float]:
        """The pauses between attempts, each scaled by a random 0.5-1 so that many clients
        that lost the same server do not come back in lockstep."""
        wait = self.first_s
        while True:
            yield min(wait, self.max_wait_s) * random.uniform(0.5, 1.0)
            wait *= self.factor


def call_with_retries(
    method: grpc.UnaryUnaryMultiCallable,
    request: object,
    timeout: float | None,
    retry: Retry = Retry(),
    metadata: tuple[tuple[str, str], ...] = (),
) -> Any:
    """`method(request)`, sent again while it fails UNAVAILABLE and `retry` allows.

    Every ExplainService RPC is a pure read, so a repeat is safe. UNAVAILABLE is what a
    load balancer answers for a call whose replica died mid-call (nginx's HTTP 502), or a
    server that is restarting. gRPC's own retry policy cannot cover the first case: a 502
    arrives as response headers, which commit the call. Other codes are the answer, never
    retried (a DEADLINE_EXCEEDED call may still be running on the server).
    """
    deadline = time.monotonic() + retry.total_s
    waits = retry.waits()
    while True:
        try:
            return method(request, timeout=timeout, metadata=metadata or None)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            wait = next(waits)
            if time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)


def _pem(value: bytes | str | Path | None) -> bytes | None:
    """PEM bytes as given, or read from a file path."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def _targets(targets: int | Sequence[int] | None) -> list[int]:
    if targets is None:
        return []
    if isinstance(targets, int | np.integer):
        return [int(targets)]
    return [int(t) for t in targets]


def _set_input(request: pb.ExplainRequest, data: np.ndarray | str | Path | bytes) -> None:
    if isinstance(data, bytes):
        request.image = data
    elif isinstance(data, np.ndarray):
        request.tensor.CopyFrom(to_tensor(data))
    elif Path(data).suffix.lower() == ".npy":
        request.tensor.CopyFrom(to_tensor(np.load(data)))
    else:
        request.image = Path(data).read_bytes()


def _summary(info: pb.ModelInfo) -> ModelSummary:
    return ModelSummary(
        name=info.name,
        available=info.available,
        error=info.error,
        input_shape=tuple(info.input.shape),
        output_shape=tuple(info.output.shape),
        labels=tuple(info.labels),
        default_method=_METHOD_NAMES.get(info.default_method, ""),
        takes_images=info.HasField("preprocessing"),
        reload_error=info.reload_error,
    )
