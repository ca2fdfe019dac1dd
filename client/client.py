"""A Python client for the Explain service: numpy arrays and image files in, arrays out."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from onnxplain.render import (
    DEFAULT_OPTIONS,
    HeatmapOptions,
    as_image,
    guess_layout,
    render_heatmap,
    to_2d,
)
from PIL import Image

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor
from onnxplain.v1.values import decode_value, encode_value, method_from_wire, method_to_wire

from .targets import ExplainedDetection, Target, decode_detections, set_target

# The released typed fields that alias parameters: a value they can carry is sent in them
# (a server from before the generic `parameters` reads them too); any other parameter, or
# a value they cannot carry, goes in `parameters`.
_INTEGRATIONS = {
    "gausslegendre": pb.INTEGRATION_GAUSS_LEGENDRE,
    "riemann_trapezoid": pb.INTEGRATION_RIEMANN_TRAPEZOID,
    "riemann_left": pb.INTEGRATION_RIEMANN_LEFT,
    "riemann_right": pb.INTEGRATION_RIEMANN_RIGHT,
    "riemann_middle": pb.INTEGRATION_RIEMANN_MIDDLE,
}
_CAM_STYLES = {"captum": pb.CAM_STYLE_CAPTUM, "pytorch-grad-cam": pb.CAM_STYLE_PYTORCH_GRAD_CAM}
_SIGNS = {
    "all": pb.HEATMAP_SIGN_ALL,
    "positive": pb.HEATMAP_SIGN_POSITIVE,
    "negative": pb.HEATMAP_SIGN_NEGATIVE,
    "absolute": pb.HEATMAP_SIGN_ABSOLUTE,
}


class ServiceError(Exception):
    """The server refused or failed a call; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class ServerUnreachable(ServiceError):
    """No server ever answered at `target`: nothing listens there, or the connection
    fails (TLS, DNS, a firewall). `reason` is gRPC's last word on it, e.g.
    "Connection refused". Its code is UNAVAILABLE, as gRPC's own."""

    def __init__(self, target: str, details: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, details)
        self.target = target
        self.reason = connect_failure(details)

    def __str__(self) -> str:
        return f"could not reach an onnxplain server at {self.target} ({self.reason})"


def connect_failure(details: str) -> str:
    """The useful end of gRPC's connect error: "failed to connect to all addresses; last
    error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"
    says "Connection refused"."""
    last = details.rsplit("last error:", 1)[-1].strip()
    reason = last.rsplit(": ", 1)[-1].strip() if ": " in last else last
    return reason or details or "no answer"


@dataclass(frozen=True)
class Explanation:
    """One row per explained (sample, class): one per sample, or top_k per sample."""

    saliency: np.ndarray  # [rows, *input shape without the batch]
    scores: np.ndarray  # the explained output, e.g. logits, one per sample
    targets: np.ndarray  # the class each row explains
    labels: list[str]  # the targets' labels, empty when the model has none
    method: str
    heatmap_png: bytes | None = None  # the first row's heatmap from the server
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    target_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # softmax
    heatmaps_png: list[bytes] = field(default_factory=list)  # every row's, from the server
    image: bytes | None = None  # the encoded image that was sent, if one was
    tensor: np.ndarray | None = None  # the tensor that was sent, if one was
    completeness_gap: np.ndarray | None = None  # Integrated Gradients, one per row
    seed: int | None = None  # SmoothGrad: the noise's seed, when the server drew it
    layer: str = ""  # Grad-CAM: the layer used
    # Everything the method returned besides the saliency, by name (GetModel's outputs),
    # the three above included when the server sends them so.
    outputs: dict[str, Any] = field(default_factory=dict)
    # A detection target's: the prediction each row explains.
    detections: list[ExplainedDetection] = field(default_factory=list)

    def label(self, row: int) -> str:
        return self.labels[row] if self.labels else str(int(self.targets[row]))

    def describe(self, row: int) -> str:
        """`sample 0  class 7 (seven)  score 12.31  p 0.982`, for people."""
        name = f" ({self.labels[row]})" if self.labels and self.labels[row] else ""
        target = int(self.targets[row])
        # -1: a seed or a target of no one class.
        what = f"class {target}{name}" if target >= 0 else "seed"
        text = f"sample {int(self.samples[row])}  {what}"
        if row < len(self.detections):
            d = self.detections[row]
            box = ",".join(f"{v:.1f}" for v in d.box)
            text += f"  detection {d.index} box {box} iou {d.iou:.2f}"
        if row >= len(self.target_scores):  # a server from before scores were sent
            return text
        p = float(self.probabilities[row])
        if np.isnan(p):  # no class of a flat score: no probability
            return f"{text}  score {float(self.target_scores[row]):.4g}"
        tiny = f" ({p:.1e})" if 0 < p < 5e-4 else ""
        return f"{text}  score {float(self.target_scores[row]):.4g}  p {p:.3f}{tiny}"

    def heatmap(
        self,
        row: int = 0,
        options: HeatmapOptions = DEFAULT_OPTIONS,
        image: Image.Image | np.ndarray | None = None,
        layout: str | None = None,
    ) -> Image.Image:
        """Row `row`'s map drawn here (onnxplain.render), over `image` or the image sent."""
        if image is None and self.image is not None:
            image = Image.open(io.BytesIO(self.image))
        map2d = to_2d(self.saliency[row], layout or guess_layout(self.saliency.shape))
        return render_heatmap(map2d, options, None if image is None else as_image(image))


@dataclass(frozen=True)
class MethodParam:
    """One parameter of a method, as the server lists it."""

    name: str
    type: str  # "int", "float", "str", "bool" or "tensor"
    kind: str  # "graph" (a value builds its own explain model) or "run_time"
    default: str  # as text; "" where chosen per model or request
    description: str
    choices: tuple[str, ...] = ()


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
    # Each method the model serves → its parameters' names and defaults ("" where chosen
    # per model or request).
    methods: dict[str, dict[str, str]] = field(default_factory=dict)
    # Each method → its parameters in full: type, kind, default, choices, description.
    parameters: dict[str, tuple[MethodParam, ...]] = field(default_factory=dict)
    default_layer: str = ""  # Grad-CAM's layer when a request names none
    layout: str = "NCHW"  # of the input, from the preprocessing config; NCHW when unknown
    mean: tuple[float, ...] = (0.0,)  # the preprocessing's normalisation, to undo it
    std: tuple[float, ...] = (1.0,)
    # Set when newer files for the model failed to load: the version described still serves.
    reload_error: str = ""
    # The server's stored sanity check (`onnxplain sanity --write`): (method, passed) pairs.
    sanity: tuple[tuple[str, bool], ...] = ()


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
        self.target = target
        self.timeout = timeout
        self.retry = retry if retry is not None else Retry()
        # Whether a server has answered this client yet (any answer but UNAVAILABLE): until
        # then UNAVAILABLE most likely means nothing listens, and the client says so soon.
        self._reached = False

    def explain(
        self,
        model: str,
        data: np.ndarray | str | Path | bytes,
        method: str | None = None,
        targets: int | str | Sequence[int | str] | None = None,
        heatmap: bool | HeatmapOptions = False,
        top_k: int | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        target: Target | None = None,
        output_grad: np.ndarray | None = None,
        **options: Any,
    ) -> Explanation:
        """Saliency of `targets` (default: each sample's top class) for an array or image.

        `data` is a preprocessed input array, a path to an .npy file or to a PNG/JPEG image,
        or the bytes of an encoded image; `method` is a method's name as `model()` lists
        them (None: the model's default). `targets` are class indices or class names (the
        model's labels), one per sample or one for all; `top_k` explains each sample's k
        best classes instead, in one call. `heatmap` (True, or the options) asks the server
        for one heatmap PNG per row. The method's parameters (`model(name).parameters`
        lists each method's, with its type) go in `params` or as keywords, e.g.
        `explain(m, x, "some_method", steps=16)`: int, float, str, bool or numpy
        array values. Keyword spellings kept from the typed fields: baseline also takes a
        number (a constant), ("blur", sigma) or an array (the baseline tensor).

        Beyond a class: `target` a Region, Position or DetectionBox (targets.py), or
        `output_grad` the seed itself, shaped like the explained output with its batch;
        either instead of `targets` and `top_k`.
        """
        if method is not None and not isinstance(method, str):
            raise ValueError(f"method {method!r}: give a method's name")
        indices, names = _targets(targets)
        request = pb.ExplainRequest(
            model=model,
            method=method_to_wire(method) if method else pb.METHOD_UNSPECIFIED,
            method_name=method or "",
            targets=indices,
            target_names=names,
            heatmap=bool(heatmap),
            top_k=top_k or 0,
        )
        if isinstance(heatmap, HeatmapOptions):
            _set_heatmap_options(request, heatmap)
        _set_input(request, data)
        if target is not None:
            set_target(request, target)
        if output_grad is not None:
            request.output_grad.CopyFrom(to_tensor(np.asarray(output_grad)))
        given = {k for k, v in options.items() if v is not None}
        overlap = sorted(set(params or {}) & given)
        if overlap:
            raise ValueError(f"parameter {overlap[0]!r} is given twice: as a keyword and in params")
        _set_params(request, {**(params or {}), **options})
        response = self._call(self._stub.Explain, request)
        outputs = {name: decode_value(name, v) for name, v in response.outputs.items()}
        return Explanation(
            saliency=to_array(response.saliency),
            scores=to_array(response.scores),
            targets=np.asarray(response.targets, dtype=np.int64),
            labels=list(response.target_labels),
            method=response.method_name or method_from_wire(response.method) or "",
            heatmap_png=response.heatmap_png or None,
            completeness_gap=(
                np.asarray(response.completeness_gap, np.float32)
                if response.completeness_gap
                else None
            ),
            seed=response.seed if response.HasField("seed") else None,
            layer=response.layer,
            # A server from before top-k sends no samples: then row i is sample i.
            samples=np.asarray(response.samples or range(len(response.targets)), dtype=np.int64),
            target_scores=np.asarray(response.target_scores, dtype=np.float64),
            probabilities=np.asarray(response.target_probabilities, dtype=np.float64),
            heatmaps_png=list(response.heatmaps_png),
            image=request.image if request.WhichOneof("input") == "image" else None,
            tensor=to_array(request.tensor) if request.WhichOneof("input") == "tensor" else None,
            outputs=outputs,
            detections=decode_detections(response),
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
        reached = self._reached
        budget = self.retry.total_s if reached else self.retry.first_contact_budget()
        try:
            response = call_with_retries(
                method, request, self.timeout, self.retry, self._metadata, budget
            )
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE and not reached:
                raise ServerUnreachable(self.target, details) from None
            self._reached = True
            raise ServiceError(code, details) from None
        self._reached = True
        return response


@dataclass(frozen=True)
class Retry:
    """Exponential backoff on UNAVAILABLE: waits of `first_s`, x`factor`, at most `max_wait_s`
    each, until `total_s` have passed since the first attempt; `Retry(total_s=0)` never retries.

    The default (10 s) covers a server restart (0.4 s on an idle machine, measured 2-4.5 s on
    a loaded one, more for large models) and a replica leaving a load balancer. Until a server
    has answered the client once, the budget is `first_contact_s` (3 s) instead: most often
    nothing listens there (not started, a wrong address), and the caller should hear so at
    once, not after 10 s; a server that is still starting gets those 3 s.
    """

    total_s: float = 10.0
    first_s: float = 0.05
    factor: float = 2.0
    max_wait_s: float = 1.0
    first_contact_s: float = 3.0

    def first_contact_budget(self) -> float:
        """How long to retry before any server has answered: never more than `total_s`."""
        return min(self.total_s, self.first_contact_s)

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
    budget_s: float | None = None,
) -> Any:
    """`method(request)`, sent again while it fails UNAVAILABLE and `retry` allows (for
    `budget_s` seconds when given, else `retry.total_s`).

    Every ExplainService RPC is a pure read, so a repeat is safe. UNAVAILABLE is what a
    load balancer answers for a call whose replica died mid-call (nginx's HTTP 502), or a
    server that is restarting. gRPC's own retry policy cannot cover the first case: a 502
    arrives as response headers, which commit the call. Other codes are the answer, never
    retried (a DEADLINE_EXCEEDED call may still be running on the server).
    """
    deadline = time.monotonic() + (retry.total_s if budget_s is None else budget_s)
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


def _targets(targets: int | str | Sequence[int | str] | None) -> tuple[list[int], list[str]]:
    """(indices, names): class indices, or class names that the server looks up."""
    if targets is None:
        return [], []
    given: list[int | str] = (
        [targets] if isinstance(targets, int | np.integer | str) else list(targets)
    )
    if all(isinstance(t, int | np.integer) for t in given):
        return [int(t) for t in given], []
    if all(isinstance(t, str) for t in given):
        return [], [str(t) for t in given]
    raise ValueError("give targets as class indices or as class names, not both")


def _set_heatmap_options(request: pb.ExplainRequest, options: HeatmapOptions) -> None:
    request.heatmap_sign = _SIGNS[options.sign]
    request.heatmap_opacity = options.opacity
    request.heatmap_colormap = options.colormap or ""
    if options.percentile is not None:
        request.heatmap_percentile = options.percentile
    request.heatmap_overlay = options.overlay


def _set_input(request: pb.ExplainRequest, data: np.ndarray | str | Path | bytes) -> None:
    if isinstance(data, bytes):
        request.image = data
    elif isinstance(data, np.ndarray):
        request.tensor.CopyFrom(to_tensor(data))
    elif Path(data).suffix.lower() == ".npy":
        request.tensor.CopyFrom(to_tensor(np.load(data)))
    else:
        request.image = Path(data).read_bytes()


def _set_params(request: pb.ExplainRequest, params: Mapping[str, Any]) -> None:
    """Each parameter into its typed alias field where one can carry the value, else into
    the generic `parameters` map (the server checks names, types and values)."""
    for name, value in params.items():
        if value is None:
            continue
        if not _set_alias(request, name, value):
            encoded = encode_value(value.item() if isinstance(value, np.generic) else value)
            if encoded is None:
                raise ValueError(f"parameter {name!r}: {value!r} does not fit the wire's int64")
            request.parameters[name].CopyFrom(encoded)


def _set_alias(request: pb.ExplainRequest, name: str, value: Any) -> bool:
    """Sets the typed field that aliases `name` to `value`; False where none can."""
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )
    if name == "layer" and isinstance(value, str) and value:
        request.layer = value
    elif name == "cam_style" and value in _CAM_STYLES:
        request.cam_style = _CAM_STYLES[value]
    elif name == "integration" and value in _INTEGRATIONS:
        request.integration = _INTEGRATIONS[value]
    elif name == "gradient" and isinstance(value, str) and method_to_wire(value):
        request.gradient = method_to_wire(value)
    elif name in ("steps", "samples") and _fits(value, -(2**31), 2**31):
        setattr(request, name, int(value))
    elif name == "seed" and _fits(value, 0, 2**64):
        request.seed = int(value)
    elif name == "sigma" and number:
        request.sigma = float(value)
    elif name == "noise" and isinstance(value, np.ndarray):
        request.noise.CopyFrom(to_tensor(value))
    elif name == "baseline":
        _set_baseline(request.baseline, value)
    else:
        return False
    return True


def _fits(value: Any, low: int, high: int) -> bool:
    whole = isinstance(value, int | np.integer) and not isinstance(value, bool)
    return whole and low <= value < high


def _set_baseline(baseline: pb.Baseline, value: object) -> None:
    """ "zeros", a number (a constant), ("blur", sigma) or "blur:SIGMA", or an array."""
    if isinstance(value, np.ndarray):
        baseline.tensor.CopyFrom(to_tensor(value))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        baseline.constant = float(value)
    elif value == "zeros":
        baseline.zeros = True
    elif isinstance(value, tuple) and len(value) == 2 and value[0] == "blur":
        baseline.blur_sigma = float(value[1])
    elif isinstance(value, str) and value.startswith(("blur:", "constant:")):
        kind, _, number = value.partition(":")
        if kind == "blur":
            baseline.blur_sigma = float(number)
        else:
            baseline.constant = float(number)
    else:
        raise ValueError(
            f"baseline {value!r}: use 'zeros', a number, ('blur', sigma), 'blur:SIGMA' or an array"
        )


def _summary(info: pb.ModelInfo) -> ModelSummary:
    return ModelSummary(
        name=info.name,
        available=info.available,
        error=info.error,
        input_shape=tuple(info.input.shape),
        output_shape=tuple(info.output.shape),
        labels=tuple(info.labels),
        default_method=info.default_method_name or method_from_wire(info.default_method) or "",
        takes_images=info.HasField("preprocessing"),
        methods={m.name: {p.name: p.default_value for p in m.parameters} for m in info.method_info},
        parameters={m.name: tuple(_param(p) for p in m.parameters) for m in info.method_info},
        default_layer=info.default_layer,
        layout=info.preprocessing.layout or "NCHW",
        mean=tuple(info.preprocessing.mean) or (0.0,),
        std=tuple(info.preprocessing.std) or (1.0,),
        reload_error=info.reload_error,
        sanity=tuple(
            (r.method_name or method_from_wire(r.method) or "", r.passed) for r in info.sanity
        ),
    )


_KINDS = {pb.PARAMETER_KIND_GRAPH: "graph", pb.PARAMETER_KIND_RUN_TIME: "run_time"}


def _param(p: pb.MethodParameter) -> MethodParam:
    return MethodParam(
        name=p.name,
        type=p.type,
        kind=_KINDS.get(p.kind, ""),
        default=p.default_value,
        description=p.description,
        choices=tuple(p.choices),
    )
