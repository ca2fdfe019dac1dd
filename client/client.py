"""A Python client for the Explain service: numpy arrays and image files in, arrays out."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    "gradcam": pb.METHOD_GRADCAM,
    "guided_gradcam": pb.METHOD_GUIDED_GRADCAM,
    "input_x_gradient": pb.METHOD_INPUT_X_GRADIENT,
    "smoothgrad": pb.METHOD_SMOOTHGRAD,
    "integrated_gradients": pb.METHOD_INTEGRATED_GRADIENTS,
}
_METHOD_NAMES = {wire: name for name, wire in _METHODS.items() if name}
_INTEGRATIONS = {
    "gausslegendre": pb.INTEGRATION_GAUSS_LEGENDRE,
    "riemann_trapezoid": pb.INTEGRATION_RIEMANN_TRAPEZOID,
    "riemann_left": pb.INTEGRATION_RIEMANN_LEFT,
    "riemann_right": pb.INTEGRATION_RIEMANN_RIGHT,
    "riemann_middle": pb.INTEGRATION_RIEMANN_MIDDLE,
}
_CAM_STYLES = {"captum": pb.CAM_STYLE_CAPTUM, "pytorch-grad-cam": pb.CAM_STYLE_PYTORCH_GRAD_CAM}


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
    completeness_gap: np.ndarray | None = None  # Integrated Gradients, one per sample
    seed: int | None = None  # SmoothGrad: the noise's seed, when the server drew it
    layer: str = ""  # Grad-CAM: the layer used


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
    default_layer: str = ""  # Grad-CAM's layer when a request names none


class Client:
    """`Client("host:port")`; use as a context manager, or call close()."""

    def __init__(self, target: str, timeout: float | None = 60.0, max_message_mb: int = 64):
        size = max_message_mb * 1024 * 1024
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
            ],
        )
        self._stub = explain_pb2_grpc.ExplainServiceStub(self._channel)
        self.timeout = timeout

    def explain(
        self,
        model: str,
        data: np.ndarray | str | Path | bytes,
        method: str | None = None,
        targets: int | Sequence[int] | None = None,
        heatmap: bool = False,
        **options: Any,
    ) -> Explanation:
        """Saliency of `targets` (default: each sample's top class) for an array or image.

        `data` is a preprocessed input array, a path to an .npy file or to a PNG/JPEG image,
        or the bytes of an encoded image; `method` is one of vanilla, deconvnet, guided,
        gradcam, guided_gradcam, input_x_gradient, smoothgrad, integrated_gradients (None:
        the model's default). `options` tune the newer methods (`model()` lists which
        method takes which): layer, cam_style ("captum", "pytorch-grad-cam"), gradient
        (vanilla, deconvnet, guided), steps, integration ("gausslegendre",
        "riemann_trapezoid", ...), baseline ("zeros", a float, ("blur", sigma), or an
        array), samples, sigma, seed, noise (an array [samples, *data shape]).
        """
        if method not in _METHODS:
            raise ValueError(
                f"unknown method {method!r}; use one of {', '.join(_METHOD_NAMES.values())}"
            )
        request = pb.ExplainRequest(
            model=model, method=_METHODS[method], targets=_targets(targets), heatmap=heatmap
        )
        _set_input(request, data)
        _set_options(request, options)
        response = self._call(self._stub.Explain, request)
        return Explanation(
            saliency=to_array(response.saliency),
            scores=to_array(response.scores),
            targets=np.asarray(response.targets, dtype=np.int64),
            labels=list(response.target_labels),
            method=_METHOD_NAMES.get(response.method, ""),
            heatmap_png=response.heatmap_png or None,
            completeness_gap=(
                np.asarray(response.completeness_gap, np.float32)
                if response.completeness_gap
                else None
            ),
            seed=response.seed if response.HasField("seed") else None,
            layer=response.layer,
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
            return call_with_retries(method, request, self.timeout)
        except grpc.RpcError as exc:
            raise ServiceError(exc.code(), exc.details() or "") from None


def call_with_retries(
    method: grpc.UnaryUnaryMultiCallable,
    request: object,
    timeout: float | None,
    attempts: int = 3,
    backoff_s: float = 0.05,
) -> Any:
    """`method(request)`, sent again when it fails UNAVAILABLE.

    Every ExplainService RPC is a pure read, so a repeat is safe. UNAVAILABLE is what a
    load balancer answers for a call whose replica died mid-call (nginx's HTTP 502), or a
    server that is restarting. gRPC's own retry policy cannot cover the first case: a 502
    arrives as response headers, which commit the call.
    """
    for attempt in range(attempts):
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


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


def _set_options(request: pb.ExplainRequest, options: dict[str, Any]) -> None:
    """The newer methods' keyword arguments into their request fields."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; use {', '.join(sorted(_OPTIONS))}")
    given = {k: v for k, v in options.items() if v is not None}
    if "layer" in given:
        request.layer = str(given["layer"])
    if "cam_style" in given:
        _check_choice(_CAM_STYLES, given["cam_style"], "cam_style")
        request.cam_style = _CAM_STYLES[given["cam_style"]]
    if "gradient" in given:
        if given["gradient"] not in ("vanilla", "deconvnet", "guided"):
            raise ValueError(f"gradient {given['gradient']!r}: use vanilla, deconvnet or guided")
        request.gradient = _METHODS[given["gradient"]]
    if "integration" in given:
        _check_choice(_INTEGRATIONS, given["integration"], "integration")
        request.integration = _INTEGRATIONS[given["integration"]]
    for name in ("steps", "samples", "seed"):
        if name in given:
            setattr(request, name, int(given[name]))
    if "sigma" in given:
        request.sigma = float(given["sigma"])
    if "noise" in given:
        request.noise.CopyFrom(to_tensor(np.asarray(given["noise"])))
    if "baseline" in given:
        _set_baseline(request.baseline, given["baseline"])


_OPTIONS = {
    "layer",
    "cam_style",
    "gradient",
    "steps",
    "integration",
    "baseline",
    "samples",
    "sigma",
    "seed",
    "noise",
}


def _check_choice(table: Mapping[str, object], value: str, what: str) -> None:
    if value not in table:
        raise ValueError(f"{what} {value!r}: use one of {', '.join(table)}")


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
        default_method=_METHOD_NAMES.get(info.default_method, ""),
        takes_images=info.HasField("preprocessing"),
        methods={m.name: {p.name: p.default_value for p in m.parameters} for m in info.method_info},
        default_layer=info.default_layer,
    )
