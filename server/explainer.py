"""The core: validate a request against its model, pick targets, run, and return arrays.

Nothing here knows about gRPC: inputs are numpy arrays or image bytes, errors are the
core's own (`server.errors`), and the servicer translates both ways.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from onnxplain.graph_rewrite import GRAD_INPUT, SALIENCY_OUTPUT, Method
from onnxplain.graph_rewrite.methods import ALL_METHODS, REGISTRY
from onnxplain.graph_rewrite.methods.integrated_gradients import GAP_OUTPUT
from onnxruntime import InferenceSession

from .errors import InvalidInput, ModelUnavailable, Overloaded, RequestTooLarge
from .imaging import heatmap, png_bytes, preprocess
from .method_params import EAGER, MethodOptions, graph_params, run_extras
from .method_sessions import LazySessions
from .repository import LoadedModel, Repository, Spec


@dataclass(frozen=True)
class ExplainCall:
    model: str
    input: np.ndarray | bytes  # a tensor, or an encoded image
    method: str | None = None  # vanilla, deconvnet, guided; None: the model's default
    targets: Sequence[int] = ()  # empty: each sample's top class
    heatmap: bool = False
    options: MethodOptions = field(default_factory=MethodOptions)  # newer methods' parameters


@dataclass(frozen=True)
class Explanation:
    saliency: np.ndarray
    scores: np.ndarray
    targets: np.ndarray  # int64, one per sample
    method: Method
    labels: list[str]  # the targets' labels, empty when the model has none
    heatmap_png: bytes | None
    completeness_gap: np.ndarray | None = None  # Integrated Gradients, one per sample
    seed: int | None = None  # SmoothGrad's noise seed, when drawn by the server
    layer: str = ""  # Grad-CAM's layer


class ConcurrencyLimit:
    """At most `limit` explanations at once; one more is refused, not queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                f"the server is running its maximum of {self.limit} explanations; retry later"
            )
        try:
            yield
        finally:
            self._slots.release()


class Explainer:
    def __init__(self, repository: Repository, max_batch: int = 64, max_concurrent: int = 8):
        self.repository = repository
        self.max_batch = max_batch
        self.limit = ConcurrencyLimit(max_concurrent)

    def explain(self, call: ExplainCall) -> Explanation:
        model = self.repository.get(call.model)
        method = _method(call.method, model.config.default_method)
        params = graph_params(method, call.options)
        x = self._input(model, call.input)
        extras = run_extras(method, params, call.options, x)
        layer = ""
        if "layer" in dict(ALL_PARAMS.get(method, ())):
            layer = str(dict(params).get("layer") or (self._lazy(model).default_layer() or ""))
        with self.limit.slot():
            targets, score_shape = self._targets(model, x, call.targets)
            if method in EAGER:
                session = model.explain[method]
            else:
                session = self._lazy(model).get(method, params)
            outputs = self._run(session, model, x, targets, score_shape, extras.feeds, method)
        scores, saliency = outputs[0], outputs[1]
        return Explanation(
            saliency=saliency,
            scores=scores,
            targets=targets,
            method=method,
            labels=[model.config.labels[t] for t in targets] if model.config.labels else [],
            heatmap_png=self._heatmap(model, saliency) if call.heatmap else None,
            completeness_gap=outputs[2] if len(outputs) > 2 else None,
            seed=extras.seed,
            layer=layer,
        )

    def _lazy(self, model: LoadedModel) -> LazySessions:
        if model.lazy is None:
            raise ModelUnavailable(f"model {model.name!r} serves only {', '.join(EAGER)}")
        return model.lazy

    def _input(self, model: LoadedModel, given: np.ndarray | bytes) -> np.ndarray:
        if isinstance(given, bytes):
            if model.config.preprocessing is None:
                raise InvalidInput(
                    f"model {model.name!r} has no image preprocessing configured; send a tensor"
                )
            given = preprocess(given, model.config.preprocessing)
        check_input(given, model.input, self.max_batch)
        return given

    def _targets(
        self, model: LoadedModel, x: np.ndarray, given: Sequence[int]
    ) -> tuple[np.ndarray, tuple[int, ...]]:
        """The targets, one per sample, and the shape of the scores they index."""
        batch = x.shape[0]
        rest = model.output.shape[1:]
        if given and all(d is not None for d in rest):
            score_shape = (batch, *(int(d) for d in rest if d is not None))
            return check_targets(given, batch, model.output.classes or 1), score_shape
        # The top class, or the scores' shape, is only known after a forward run.
        (scores,) = model.forward.run([model.output.name], {model.input.name: x})
        flat = scores.reshape(batch, -1)
        if not given:
            return flat.argmax(axis=1).astype(np.int64), scores.shape
        return check_targets(given, batch, flat.shape[1]), scores.shape

    def _run(
        self,
        session: InferenceSession,
        model: LoadedModel,
        x: np.ndarray,
        targets: np.ndarray,
        score_shape: tuple[int, ...],
        extra_feeds: Mapping[str, np.ndarray],
        method: Method,
    ) -> list[np.ndarray]:
        """One explain run, seeded with the one-hot of each sample's target: the scores,
        the saliency, and the completeness gap for Integrated Gradients."""
        batch = score_shape[0]
        one_hot = np.zeros((batch, int(np.prod(score_shape[1:]))), dtype=model.output.dtype)
        one_hot[np.arange(batch), targets] = 1
        feeds = {model.input.name: x, GRAD_INPUT: one_hot.reshape(score_shape), **extra_feeds}
        names = [model.output.name, SALIENCY_OUTPUT]
        if method == "integrated_gradients":
            names.append(GAP_OUTPUT)
        return list(session.run(names, feeds))

    def _heatmap(self, model: LoadedModel, saliency: np.ndarray) -> bytes:
        pre = model.config.preprocessing
        return png_bytes(heatmap(saliency[0], pre.layout if pre else "NCHW"))


def _method(given: str | None, default: Method) -> Method:
    for method in ALL_METHODS:
        if given == method:
            return method
    if given is None:
        return default
    raise InvalidInput(f"unknown method {given!r}; use one of {', '.join(ALL_METHODS)}")


# Each method's parameters by name, to know which take a layer.
ALL_PARAMS = {name: tuple((p.name, p) for p in spec.params) for name, spec in REGISTRY.items()}


def check_input(x: np.ndarray, spec: Spec, max_batch: int) -> None:
    """Refuse an input whose dtype, shape, batch or values do not fit the model."""
    if x.dtype != spec.dtype:
        raise InvalidInput(
            f"input dtype is {x.dtype}; model input {spec.name!r} takes {spec.dtype}"
        )
    expected = ["?" if d is None else str(d) for d in spec.shape]
    if x.ndim != len(spec.shape) or any(
        d is not None and d != got for d, got in zip(spec.shape[1:], x.shape[1:])
    ):
        raise InvalidInput(
            f"input shape is {list(x.shape)}; model input {spec.name!r} takes "
            f"[{', '.join(expected)}]"
        )
    if x.shape[0] < 1:
        raise InvalidInput("the input batch is empty")
    if spec.shape[0] is not None and x.shape[0] != spec.shape[0]:
        raise InvalidInput(f"input batch is {x.shape[0]}; the model takes exactly {spec.shape[0]}")
    if x.shape[0] > max_batch:
        raise RequestTooLarge(f"input batch is {x.shape[0]}; this server allows {max_batch}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise InvalidInput("the input has non-finite values (NaN or infinity)")


def check_targets(given: Sequence[int], batch: int, classes: int) -> np.ndarray:
    """One target per sample (a single target applies to all), each in [0, classes)."""
    if len(given) not in (1, batch):
        raise InvalidInput(f"{len(given)} targets for a batch of {batch}: give 1 or {batch}")
    targets = np.array(list(given) * (batch if len(given) == 1 else 1), dtype=np.int64)
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.size:
        raise InvalidInput(f"target {int(bad[0])} is out of range: the model has {classes} scores")
    return targets
