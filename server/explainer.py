"""The core: validate a request against its model, pick targets, run, and return arrays.

Nothing here knows about gRPC: inputs are numpy arrays or image bytes, errors are the
core's own (`server.errors`), and the servicer translates both ways.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from onnxplain.graph_rewrite import GRAD_INPUT, SALIENCY_OUTPUT, Method
from onnxplain.graph_rewrite.methods import ALL_METHODS, REGISTRY
from onnxplain.graph_rewrite.methods.integrated_gradients import GAP_OUTPUT
from onnxplain.render import DEFAULT_OPTIONS, HeatmapOptions
from onnxruntime import InferenceSession
from PIL import Image

from .errors import InvalidInput, ModelUnavailable, Overloaded, RequestTooLarge
from .imaging import decode, heatmap_pngs, preprocess
from .method_params import EAGER, GraphParams, MethodOptions, RunExtras, graph_params, run_extras
from .method_sessions import LazySessions
from .repository import LoadedModel, Repository, Spec
from .targets import explain_top_k, resolve_names, row_stats


@dataclass(frozen=True)
class ExplainCall:
    model: str
    input: np.ndarray | bytes  # a tensor, or an encoded image
    method: str | None = None  # vanilla, deconvnet, guided; None: the model's default
    targets: Sequence[int] = ()  # empty: each sample's top class
    heatmap: bool = False
    heatmap_options: HeatmapOptions = DEFAULT_OPTIONS
    top_k: int = 0  # > 0: each sample's k best classes, one row each
    target_names: Sequence[str] = ()  # classes by label, instead of targets
    options: MethodOptions = field(default_factory=MethodOptions)  # newer methods' parameters


@dataclass(frozen=True)
class Explanation:
    """One row per explained (sample, class): one per sample, or top_k per sample."""

    saliency: np.ndarray  # [rows, *input.shape[1:]]
    scores: np.ndarray  # the explained output, one per sample
    targets: np.ndarray  # int64, one per row
    method: Method
    labels: list[str]  # the targets' labels, empty when the model has none
    heatmap_png: bytes | None  # the first row's
    samples: np.ndarray  # int64, the sample each row explains
    target_scores: np.ndarray  # each row's score at its target
    probabilities: np.ndarray  # softmax of the sample's scores at the target
    heatmaps_png: list[bytes]  # one per row when asked for
    completeness_gap: np.ndarray | None = None  # Integrated Gradients, one per row
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
        image = self._image(model, call.input)
        x = self._input(model, image if image is not None else np.asarray(call.input))
        params = graph_params(method, call.options)
        extras = run_extras(method, params, call.options, x)
        if call.top_k and extras.feeds:
            raise InvalidInput(
                f"top_k is not offered with {method}'s noise or given baseline; give targets"
            )
        layer = ""
        if any(p.name == "layer" for p in REGISTRY[method].params):
            layer = str(dict(params).get("layer") or self._lazy(model).default_layer() or "")
        run = _Run(model, method, params, extras)
        gap = None
        given = list(call.targets)
        if call.target_names:
            given = resolve_names(call.target_names, model.config.labels, model.name)
        with self.limit.slot():
            if call.top_k:
                scores, samples, targets, saliency = explain_top_k(
                    call.top_k,
                    x,
                    given,
                    self.max_batch,
                    model.input.shape[0],
                    forward=lambda v: _forward(model, v),
                    explain=lambda v, t, shape: run(self._session(run), v, t, shape)[1],
                )
            else:
                targets, score_shape = self._targets(model, x, given)
                scores, saliency, gap = run(self._session(run), x, targets, score_shape)
                samples = np.arange(len(targets), dtype=np.int64)
        flat = scores.reshape(scores.shape[0], -1)
        target_scores, probabilities = row_stats(flat, samples, targets)
        pngs = []
        if call.heatmap:
            pre = model.config.preprocessing
            pngs = heatmap_pngs(saliency, samples, x, image, pre, call.heatmap_options)
        return Explanation(
            saliency=saliency,
            scores=scores,
            targets=targets,
            method=method,
            labels=[model.config.labels[t] for t in targets] if model.config.labels else [],
            heatmap_png=pngs[0] if pngs else None,
            samples=samples,
            target_scores=target_scores,
            probabilities=probabilities,
            heatmaps_png=pngs,
            completeness_gap=gap,
            seed=extras.seed,
            layer=layer,
        )

    def _session(self, run: _Run) -> InferenceSession:
        if run.method in EAGER:
            return run.model.explain[run.method]
        return self._lazy(run.model).get(run.method, run.params)

    def _lazy(self, model: LoadedModel) -> LazySessions:
        if model.lazy is None:
            raise ModelUnavailable(f"model {model.name!r} serves only {', '.join(EAGER)}")
        return model.lazy

    def _image(self, model: LoadedModel, given: np.ndarray | bytes) -> Image.Image | None:
        """The decoded image of an image request (kept: heatmaps are drawn over it)."""
        if not isinstance(given, bytes):
            return None
        if model.config.preprocessing is None:
            raise InvalidInput(
                f"model {model.name!r} has no image preprocessing configured; send a tensor"
            )
        return decode(given)

    def _input(self, model: LoadedModel, given: np.ndarray | Image.Image) -> np.ndarray:
        if isinstance(given, Image.Image):
            assert model.config.preprocessing is not None  # checked by _image
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
        scores = _forward(model, x)
        flat = scores.reshape(batch, -1)
        if not given:
            return flat.argmax(axis=1).astype(np.int64), scores.shape
        return check_targets(given, batch, flat.shape[1]), scores.shape


@dataclass(frozen=True)
class _Run:
    """One explain run of a method with its parameters: the session is chosen by the
    caller, the seed is the one-hot of each sample's target, plus the method's own feeds."""

    model: LoadedModel
    method: Method
    params: GraphParams
    extras: RunExtras

    def __call__(
        self,
        session: InferenceSession,
        x: np.ndarray,
        targets: np.ndarray,
        score_shape: tuple[int, ...],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The scores, the saliency, and the completeness gap for Integrated Gradients."""
        model = self.model
        batch = score_shape[0]
        one_hot = np.zeros((batch, int(np.prod(score_shape[1:]))), dtype=model.output.dtype)
        one_hot[np.arange(batch), targets] = 1
        feeds = {model.input.name: x, GRAD_INPUT: one_hot.reshape(score_shape)}
        feeds.update(self.extras.feeds)
        names = [model.output.name, SALIENCY_OUTPUT]
        if self.method == "integrated_gradients":
            names.append(GAP_OUTPUT)
        outputs = session.run(names, feeds)
        return outputs[0], outputs[1], outputs[2] if len(outputs) > 2 else None


def _forward(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    (scores,) = model.forward.run([model.output.name], {model.input.name: x})
    return np.asarray(scores)


def _method(given: str | None, default: Method) -> Method:
    for method in ALL_METHODS:
        if given == method:
            return method
    if given is None:
        return default
    raise InvalidInput(f"unknown method {given!r}; use one of {', '.join(ALL_METHODS)}")


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
