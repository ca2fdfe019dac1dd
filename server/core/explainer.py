"""The core: validate a request against its model, queue it, run it, and return arrays.

Nothing here knows about gRPC: inputs are numpy arrays or image bytes, errors are the
core's own (`server.errors`), and the servicer translates both ways. Every request runs once
through its model's queue (`batching.py`), where concurrent requests are merged; the explain
model picks each sample's top class itself (`graph_rewrite/seeding.py`), so a request
without targets costs what one with targets does.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnxplain.graph_rewrite import GRAD_INPUT, TARGETS_INPUT, TARGETS_OUTPUT, TOP_CLASS, Method
from onnxplain.graph_rewrite.methods import REGISTRY, RunFeeds
from onnxplain.render import DEFAULT_OPTIONS, HeatmapOptions
from PIL import Image

from ..runtime.engines import Cancel
from ..store.repository import LoadedModel, Repository, SessionKey, Spec
from .batching import ModelQueue, OnAbandon, QueueLimits, RunBatch
from .detection import Detection, DetectionTarget, detection_seed
from .errors import InvalidInput, RequestTooLarge
from .imaging import decode, heatmap_pngs, preprocess
from .method_params import method_params, run_feeds
from .region_targets import PositionTarget, RegionTarget, position_seed, region_seed
from .seeds import BuiltSeed, given_seed
from .targets import explain_top_k, resolve_names, row_stats

# What a request explains beyond one class (ExplainRequest.region, position, detection).
SeedTarget = RegionTarget | PositionTarget | DetectionTarget


@dataclass(frozen=True)
class ExplainCall:
    model: str
    input: np.ndarray | bytes  # a tensor, or an encoded image
    method: str | None = None  # a registered method's name; None: the model's default
    targets: Sequence[int] = ()  # empty: each sample's top class
    # True: a target may be TOP_CLASS (-1), that sample's top class (the Open Inference
    # Protocol's `targets` input); the Explain RPC keeps refusing negative targets.
    top_class_targets: bool = False
    heatmap: bool = False
    heatmap_options: HeatmapOptions = DEFAULT_OPTIONS
    top_k: int = 0  # > 0: each sample's k best classes, one row each
    target_names: Sequence[str] = ()  # classes by label, instead of targets
    # The method's parameters by name (its registry entry says which it takes).
    params: Mapping[str, Any] = field(default_factory=dict)
    # The caller's own seed, shaped like the explained output (batch included).
    output_grad: np.ndarray | None = None
    # A region, position or detection target, built into a seed from the forward run.
    target: SeedTarget | None = None


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
    # What the method returned besides the saliency, by name (its registry entry's
    # `outputs`: per-row arrays and values its run-time feeding reports), and the "layer"
    # used by a method that takes one.
    outputs: dict[str, Any] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)  # a detection target's, per row


class Explainer:
    """Explains requests against a repository, through one bounded queue per model.

    `max_concurrent` is the number of runs of one model at once (`queue.instances`).
    """

    def __init__(
        self,
        repository: Repository,
        max_batch: int = 64,
        max_concurrent: int | None = None,
        queue: QueueLimits | None = None,
    ) -> None:
        self.repository = repository
        self.max_batch = max_batch
        limits = queue or QueueLimits()
        if max_concurrent is not None:
            limits = dataclasses.replace(limits, instances=max_concurrent)
        self.queue_limits = limits
        # One queue per loaded model object: a reloaded model gets a fresh queue, and the old
        # one goes with the old model.
        self._queues: weakref.WeakKeyDictionary[LoadedModel, ModelQueue] = (
            weakref.WeakKeyDictionary()
        )
        self._queues_lock = threading.Lock()

    def explain(
        self,
        call: ExplainCall,
        deadline: float | None = None,
        on_abandon: OnAbandon | None = None,
    ) -> Explanation:
        """`deadline`: a time.monotonic() time; `on_abandon` registers a function to call
        when the caller goes away (gRPC's `context.add_callback`)."""
        model = self.repository.get(call.model)
        method = _method(call.method, model.config.default_method)
        image = self._image(model, call.input)
        x = self._input(model, image if image is not None else np.asarray(call.input))
        spec = REGISTRY[method]
        params = method_params(spec, call.params)
        feeds = run_feeds(spec, params, x)
        if call.top_k and feeds.feeds:
            raise InvalidInput(
                f"top_k is not offered with {method}'s run-time inputs (e.g. a noise or a "
                "given baseline); give targets"
            )
        reported: dict[str, Any] = dict(feeds.reported)
        if spec.param("layer") is not None:
            reported["layer"] = str(params.resolved["layer"] or model.default_layer() or "")
        seeded = call.output_grad is not None or call.target is not None
        if seeded:
            _check_seed_alone(call)
        session = SessionKey.of(method, params.graph, given_seed=seeded)
        given = list(call.targets)
        if call.target_names:
            given = resolve_names(call.target_names, model.config.labels, model.name)
        extra: list[list[np.ndarray]] = []

        def run(v: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            outputs = self.queue(model).submit(
                BatchKey(session, v.shape[1:], v.dtype.str, _Feeds(feeds) if feeds.feeds else None),
                v,
                t,
                deadline,
                on_abandon,
            )
            scores, saliency, explained = outputs[:3]
            extra.append(outputs[3:])
            explained = explained.astype(np.int64)
            _check_in_range(explained, scores)
            return scores, saliency, explained

        built: BuiltSeed | None = None
        if seeded:
            built = _seed(call, model, x)
            scores, saliency, _ = run(x, built.seed)
            samples = np.arange(len(x), dtype=np.int64)
            targets = built.classes
        elif call.top_k:
            scores, samples, targets, saliency = explain_top_k(
                call.top_k,
                x,
                given,
                self.max_batch,
                model.input.shape[0],
                explain=run,
                top_class=TOP_CLASS,
                classes=model.output.classes,
            )
        else:
            wanted = _requested_targets(given, len(x), model.output, call.top_class_targets)
            scores, saliency, targets = run(x, wanted)
            samples = np.arange(len(targets), dtype=np.int64)
        flat = scores.reshape(scores.shape[0], -1)
        if built is not None:  # no class of a flat score: the explained scalar, no probability
            target_scores = _seed_values(built, scores)
            probabilities = np.full(len(samples), np.nan)
        else:
            target_scores, probabilities = row_stats(flat, samples, targets)
        if not call.top_k and extra:  # per-row outputs: one run's rows are the response's
            names = [o.name for o in spec.outputs if o.from_model]
            reported.update(zip(names, extra[0]))
        pngs = []
        if call.heatmap:
            pre = model.config.preprocessing
            pngs = heatmap_pngs(saliency, samples, x, image, pre, call.heatmap_options)
        return Explanation(
            saliency=saliency,
            scores=scores,
            targets=targets,
            method=method,
            labels=_labels(model.config.labels, targets),
            heatmap_png=pngs[0] if pngs else None,
            samples=samples,
            target_scores=target_scores,
            probabilities=probabilities,
            heatmaps_png=pngs,
            outputs=reported,
            detections=list(built.detections) if built is not None else [],  # type: ignore[arg-type]
        )

    def queue(self, model: LoadedModel) -> ModelQueue:
        with self._queues_lock:
            queue = self._queues.get(model)
            if queue is None:
                queue = ModelQueue(
                    model.name, _runner_for(model), self.queue_limits, model.batchable
                )
                self._queues[model] = queue
            return queue

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


def _check_seed_alone(call: ExplainCall) -> None:
    if call.output_grad is not None and call.target is not None:
        raise InvalidInput("give output_grad or a region, position or detection target, not both")
    if call.targets or call.target_names or call.top_k:
        what = (
            "output_grad"
            if call.output_grad is not None
            else "a region, position or detection target"
        )
        raise InvalidInput(f"{what} combines with no targets, target_names or top_k")


def _seed(call: ExplainCall, model: LoadedModel, x: np.ndarray) -> BuiltSeed:
    """The request's seed: its own, checked, or one built from its target on the forward run."""
    if call.output_grad is not None:
        return given_seed(
            np.asarray(call.output_grad),
            model.output.dtype,
            model.output.shape,
            len(x),
            lambda: _forward(model, x),
        )
    target = call.target
    hw = _input_hw(model, x)
    if isinstance(target, RegionTarget):
        return region_seed(target, _forward(model, x), hw)
    if isinstance(target, PositionTarget):
        return position_seed(target, _forward(model, x))
    assert isinstance(target, DetectionTarget)
    detection = model.config.detection
    if detection is None:
        raise InvalidInput(
            f"model {model.name!r} has no [detection] layout in its config.toml; a detection "
            "target needs one"
        )
    names = [model.output.name] + ([detection.boxes] if detection.boxes else [])
    outputs = [np.asarray(o) for o in model.forward.run(names, {model.input.name: x})]
    boxes = outputs[1] if len(outputs) > 1 else None
    return detection_seed(target, detection, outputs[0], boxes, hw)


def _input_hw(model: LoadedModel, x: np.ndarray) -> tuple[int, int]:
    """The input's height and width in pixels (a box's coordinates are in them)."""
    pre = model.config.preprocessing
    if x.ndim != 4:
        raise InvalidInput(
            f"a box or region needs an image input [N, C, H, W]; this is {list(x.shape)}"
        )
    if pre is not None and pre.layout == "NHWC":
        return int(x.shape[1]), int(x.shape[2])
    return int(x.shape[2]), int(x.shape[3])


def _seed_values(built: BuiltSeed, scores: np.ndarray) -> np.ndarray:
    if built.values is not None:
        return built.values
    products = scores.astype(np.float64) * built.seed.astype(np.float64)
    return products.reshape(len(products), -1).sum(axis=1)


def _labels(labels: Sequence[str], targets: np.ndarray) -> list[str]:
    """Each row's class label; empty where the model has none, "" for a row of no one class."""
    if not labels:
        return []
    return [labels[t] if 0 <= t < len(labels) else "" for t in targets]


def _forward(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """The outputs a target is built from (a region, position or given seed), from the forward
    session; top-k needs none (it ranks classes from its explain run's scores)."""
    (scores,) = model.forward.run([model.output.name], {model.input.name: x})
    return np.asarray(scores)


class _Feeds:
    """A request's own extra feeds (SmoothGrad's noise, a given baseline): compared by
    identity, so a request that has them never merges with another."""

    def __init__(self, feeds: RunFeeds) -> None:
        self.feeds = dict(feeds.feeds)


@dataclass(frozen=True)
class BatchKey:
    """Requests with equal keys run in one batch: same session, same sample shape and
    dtype, and no run-time inputs of their own."""

    session: SessionKey
    sample_shape: tuple[int, ...]
    dtype: str
    feeds: _Feeds | None = None

    @property
    def method(self) -> str:  # the metrics' label (hooks.batch_size)
        return str(self.session.method)


def _runner_for(model: LoadedModel) -> RunBatch:
    """Runs one (possibly merged) batch of `model` through its seeded explain session."""

    def run(key: Hashable, x: np.ndarray, targets: np.ndarray, cancel: Cancel) -> list[np.ndarray]:
        assert isinstance(key, BatchKey) and key.session.method is not None
        served = model.explain_session(key.session)
        # With a given seed `targets` holds the seed rows themselves.
        seeded = key.session.given_seed
        feeds = {model.input.name: x, (GRAD_INPUT if seeded else TARGETS_INPUT): targets}
        if key.feeds is not None:
            feeds.update(key.feeds.feeds)
        # A merged graph holds other methods too: the engine computes only what the
        # fetches need.
        extra = [o.name for o in REGISTRY[key.session.method].outputs if o.from_model]
        if seeded:
            outputs = served.session.run(
                [model.output.name, served.saliency, *extra], feeds, cancel
            )
            return [*outputs[:2], np.full(len(x), -1, np.int64), *outputs[2:]]
        names = [model.output.name, served.saliency, TARGETS_OUTPUT, *extra]
        return served.session.run(names, feeds, cancel)

    return run


def _requested_targets(
    given: Sequence[int], batch: int, output: Spec, top_class: bool = False
) -> np.ndarray:
    """One target per sample, TOP_CLASS where none was given (or, with `top_class`, where
    one is TOP_CLASS); checked where the scores' size is known before the run (else
    `_check_in_range` checks after it)."""
    if not given:
        return np.full(batch, TOP_CLASS, dtype=np.int64)
    return check_targets(given, batch, output.classes, top_class)


def _check_in_range(explained: np.ndarray, scores: np.ndarray) -> None:
    classes = int(np.prod(scores.shape[1:]))
    bad = explained[explained >= classes]
    if bad.size:
        raise InvalidInput(f"target {int(bad[0])} is out of range: the model has {classes} scores")


def _method(given: str | None, default: Method) -> Method:
    if given is None:
        return default
    if given in REGISTRY:
        return given
    raise InvalidInput(f"unknown method {given!r}; use one of {', '.join(REGISTRY)}")


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


def check_targets(
    given: Sequence[int], batch: int, classes: int | None, top_class: bool = False
) -> np.ndarray:
    """One target per sample (a single target applies to all), each in [0, classes), or
    TOP_CLASS where `top_class` allows it; `classes` None: not known before the run, only
    negative targets are refused."""
    if len(given) not in (1, batch):
        raise InvalidInput(f"{len(given)} targets for a batch of {batch}: give 1 or {batch}")
    targets = np.array(list(given) * (batch if len(given) == 1 else 1), dtype=np.int64)
    negative = (targets < 0) & ~(top_class & (targets == TOP_CLASS))
    bad = targets[negative | (targets >= (classes or np.iinfo(np.int64).max))]
    if bad.size:
        has = f"the model has {classes} scores" if classes else "targets index the scores"
        raise InvalidInput(f"target {int(bad[0])} is out of range: {has}")
    return targets
