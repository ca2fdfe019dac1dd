"""The model repository: DIR/<name>/model.onnx (+ config.toml), loaded into onnxruntime.

At start-up each model is read, its default method's explain model is built (building is
what can fail: an op without a backward rule, a malformed config; failing here reports it in
the log and in ListModels before any client asks) and its session created. Every other
session (another method, another graph-changing parameter, the plain forward pass) is built
when first asked for, keyed by its SessionKey (method, graph parameters), and kept: a model
served with one method costs one session. Every session of a model reads the same copy of
its weights (`weights.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference
from onnxplain.graph_rewrite import (
    GRAD_INPUT,
    REGISTRY,
    SALIENCY_OUTPUT,
    TARGETS_INPUT,
    RecipeOptions,
    RewriteError,
    default_input,
    default_layer,
    default_output,
    explain_recipe,
    merged_recipe,
    with_output,
)
from onnxplain.sanity import SanityReport, read_report
from onnxplain.sanity.report import REPORT_FILE

from ..core.errors import ConfigError, InvalidInput, ModelNotFound, ModelUnavailable
from ..runtime.engines import Engine
from ..runtime.sessions import DeviceUnavailable, SessionFactory, release_free_memory
from .config import ModelConfig, load_config
from .reasons import failure_detail, failure_reason
from .scan import (
    CONFIG_FILE,
    MODEL_FILE,
    check_inside_repository,
    empty_hint,
    model_folders,
    skipped_hints,
)
from .weights import WeightStore

__all__ = [
    "DeviceUnavailable",
    "FailedModel",
    "LoadedModel",
    "Repository",
    "SessionFactory",
    "SessionKey",
    "Spec",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    """A named tensor: numpy dtype and shape, None for a dimension that is not fixed."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def classes(self) -> int | None:
        """Scores per sample (the product of the non-batch dimensions), where fixed."""
        rest = [d for d in self.shape[1:] if d is not None]
        return math.prod(rest) if len(rest) == len(self.shape) - 1 else None

    def __str__(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype}[{dims}]"


@dataclass(frozen=True)
class SessionKey:
    """Which session: a method (None: the plain forward pass) and its graph-changing
    parameters, as (name, value) pairs sorted by name."""

    method: str | None
    params: tuple[tuple[str, Hashable], ...] = ()
    # True: the explain model takes the seed itself (`output_grad`, a request's own or one
    # the server built from a region, position or detection target) instead of `targets`.
    given_seed: bool = False

    @classmethod
    def of(
        cls, method: str, params: Sequence[tuple[str, Hashable]] = (), given_seed: bool = False
    ) -> SessionKey:
        return cls(method, tuple(sorted(params)), given_seed)

    @property
    def merges(self) -> bool:
        """Whether the merged graph of the gradient methods serves it (graph_rewrite/merge.py): a
        method the registry lets join (`MethodSpec.merges`), at its default parameters.
        Their backward walks read the same forward pass and weights, which a session of
        their own would hold again (VGG-19 served, one call each to six such methods:
        1,750 MB apart, 1,322 MB merged, as for three)."""
        spec = REGISTRY.get(self.method) if self.method is not None else None
        return spec is not None and spec.merges and not self.params and not self.given_seed

    def __str__(self) -> str:
        seed = " output_grad" if self.given_seed else ""
        return (self.method or "forward") + "".join(f" {k}={v}" for k, v in self.params) + seed


FORWARD = SessionKey(None)
# The one build lock of the merged graph, which is rebuilt whole for all its methods.
_MERGED_BUILD = "merged"
# Sessions with graph-changing parameters kept per model.
MAX_PARAMETERISED = 8


@dataclass(frozen=True)
class Endpoints:
    input: str
    output: str


class LoadedModel:
    """A model ready to serve: what it takes and gives, and its sessions, built on demand."""

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        input: Spec,
        output: Spec,
        path: Path,
        factory: SessionFactory,
        sanity: SanityReport | None = None,
        layer: str | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.input = input
        self.output = output
        self.sanity = sanity  # `onnxplain sanity --write`'s sanity.json, if any
        self.layer = layer  # Grad-CAM's default layer
        self.weights = WeightStore()  # one copy per process, read by every session below
        self._path = path
        self._stamp = _stamp(path)
        self._factory = factory
        self._sessions: dict[SessionKey, Served] = {}
        self._failures: dict[SessionKey, str] = {}
        self._building: dict[SessionKey | str, threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def batchable(self) -> bool:
        """Whether requests may be merged: the batch dimension is free."""
        return self.input.shape[0] is None

    def explain_session(self, key: SessionKey) -> Served:
        """The seeded explain session of `key` (a method and its graph parameters), built on
        first use.

        It takes the input and `targets` (int64, one per sample, -1 for the top class), or
        with `key.given_seed` the seed `output_grad` itself, and gives the explained output,
        `explained_targets` (not with a given seed) and the method's saliency output
        (`.saliency`: the merged methods share one session, each with its own output).
        """
        return self._get(key)

    @property
    def forward(self) -> Engine:
        """The plain forward pass (the explained output among its outputs), built on use."""
        return self._get(FORWARD).session

    @property
    def folder(self) -> Path:
        """The model's folder in the repository (its samples/, sanity.json, config.toml)."""
        return self._path.parent

    def default_layer(self) -> str | None:
        """Grad-CAM's default layer (found when the model was loaded); None where it has none."""
        return self.layer

    def built(self) -> list[SessionKey]:
        with self._lock:
            return list(self._sessions)

    def adopt(self, key: SessionKey, model: onnx.ModelProto) -> None:
        """Creates the session of an already built model (the one load_model checks)."""
        session = self._factory.session(model, self.weights)
        with self._lock:
            self._sessions[key] = Served(session, SALIENCY_OUTPUT)

    def _get(self, key: SessionKey) -> Served:
        merged = key.merges
        with self._lock:
            if key in self._sessions:
                return self._sessions[key]
            # The merged graph is rebuilt whole: one build at a time for all its methods.
            building = self._building.setdefault(_MERGED_BUILD if merged else key, threading.Lock())
        with building:  # one build per key; other keys build meanwhile
            with self._lock:
                if key in self._sessions:
                    return self._sessions[key]
                if key in self._failures:
                    raise ModelUnavailable(self._failures[key])
            try:
                if merged:
                    self._build_merged(key)
                else:
                    self.adopt(key, self._build(key))
            except RewriteError as exc:
                if key.params:  # a parameter the model cannot take (a layer it does not have)
                    raise InvalidInput(f"method {key.method!r} on this model: {exc}") from None
                reason = f"model {self.name!r} cannot be explained by {key.method}: {exc}"
                with self._lock:
                    self._failures[key] = reason
                raise ModelUnavailable(reason) from None
            finally:
                release_free_memory()  # the build's copies of the model, now freed
            log.info("model %s: session %s built", self.name, key)
            with self._lock:
                served = self._sessions[key]
                self._forget_oldest_parameterised()
                return served

    def _forget_oldest_parameterised(self) -> None:
        """Keeps at most MAX_PARAMETERISED sessions with parameters (oldest built goes
        first): a client cycling through sigmas or step counts rebuilds instead of growing
        the server without bound; a given seed's session counts as one. Holds _lock."""
        keyed = [k for k in self._sessions if k.params or k.given_seed]
        for key in keyed[: max(0, len(keyed) - MAX_PARAMETERISED)]:
            del self._sessions[key]

    def _build_merged(self, key: SessionKey) -> None:
        """One session for `key`'s method and every merged method already served."""
        with self._lock:
            methods = [k.method for k in self._sessions if k.merges and k.method is not None]
        assert key.method is not None
        methods.append(key.method)  # a RewriteError from the build is this method's own
        combined, saliency = merged_recipe(self._load(), methods, self._recipe_options())
        session = self._factory.session(combined, self.weights)
        with self._lock:
            for method in methods:
                self._sessions[SessionKey(method)] = Served(session, saliency[method])

    def _build(self, key: SessionKey) -> onnx.ModelProto:
        model = self._load()
        if key.method is None:  # the plain forward pass
            return with_output(shape_inference.infer_shapes(model), self.output.name)
        options = self._recipe_options()
        if key.given_seed:
            options = dataclasses.replace(options, seed_from="output_grad")
        return explain_recipe(model, key.method, dict(key.params), options)

    def _load(self) -> onnx.ModelProto:
        if _stamp(self._path) != self._stamp:
            raise ModelUnavailable(
                f"model {self.name!r} changed on disk since it was loaded; it serves other "
                "methods again once it is reloaded"
            )
        return onnx.load(str(self._path))

    def _recipe_options(self) -> RecipeOptions:
        return recipe_options(Endpoints(self.input.name, self.output.name))


@dataclass(frozen=True)
class Served:
    """A session and the name of its saliency output for one method."""

    session: Engine
    saliency: str


@dataclass(frozen=True)
class FailedModel:
    name: str
    error: str  # for clients: no paths, no traceback


def recipe_options(ends: Endpoints) -> RecipeOptions:
    """How the server builds its explain models: onnxruntime's formulations, seeded from
    `targets` in the graph, the explained output among the outputs (the scores it returns)."""
    return RecipeOptions(
        ends.input, ends.output, target="onnxruntime", seed_from="targets", expose_output=True
    )


def _stamp(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


class Repository:
    """Every model in a folder, each either loaded or failed with a reason.

    `replace` swaps one model's entry while requests run (server/ops/reload.py decides what to
    swap): readers always see a whole dict, since a swap builds a new one and rebinds it.
    """

    def __init__(self, models: dict[str, LoadedModel | FailedModel]) -> None:
        self._models = models
        self._reload_errors: dict[str, str] = {}
        self._swap = threading.Lock()
        self._observers: list[Callable[[], None]] = []

    def observe(self, callback: Callable[[], None]) -> None:
        """Call `callback` now and after every swap: health follows what is served."""
        self._observers.append(callback)
        callback()

    def ready(self) -> bool:
        """Whether some model is loaded and can explain (a server of failed models is not)."""
        return any(not isinstance(entry, FailedModel) for entry in self._models.values())

    @classmethod
    def load(cls, root: Path, sessions: SessionFactory) -> Repository:
        if not root.is_dir():
            raise FileNotFoundError(f"model repository {root} is not a folder")
        for hint in skipped_hints(root):
            log.warning("%s", hint)
        folders = model_folders(root)
        if not folders:
            log.warning("%s", empty_hint(root))
        return cls({folder.name: _load_or_fail(folder, sessions) for folder in folders})

    def replace(
        self,
        name: str,
        entry: LoadedModel | FailedModel | None,
        reload_error: str | None = None,
    ) -> None:
        """Serve `entry` as `name` from now on (None: remove it). `reload_error`: why newer
        files for it failed to load, while this (older) entry keeps serving."""
        with self._swap:
            models = dict(self._models)
            errors = dict(self._reload_errors)
            errors.pop(name, None)
            if entry is None:
                models.pop(name, None)
            else:
                models[name] = entry
                if reload_error is not None:
                    errors[name] = reload_error
            self._models, self._reload_errors = dict(sorted(models.items())), errors
        for callback in self._observers:  # outside the lock: a callback may read the models
            callback()

    def reload_error(self, name: str) -> str | None:
        """Why the newest files of `name` failed to load, if the entry is an older version."""
        return self._reload_errors.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    def entry(self, name: str) -> LoadedModel | FailedModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(f"no model named {name!r}; ListModels gives the names") from None

    def get(self, name: str) -> LoadedModel:
        entry = self.entry(name)
        if isinstance(entry, FailedModel):
            raise ModelUnavailable(f"model {name!r} failed to load: {entry.error}")
        return entry


def _load_or_fail(folder: Path, sessions: SessionFactory) -> LoadedModel | FailedModel:
    try:
        loaded = load_model(folder, sessions)
    except DeviceUnavailable:
        raise  # the whole server is misconfigured, not this model
    except Exception as exc:
        # One line; the traceback only at debug level: the reason is what operators act on,
        # the library's own words beside it (clients see the reason alone).
        reason = failure_reason(exc)
        log.error("model %s is unavailable: %s [%s]", folder.name, reason, failure_detail(exc))
        log.debug("model %s failed to load", folder.name, exc_info=True)
        return FailedModel(folder.name, reason)
    finally:
        release_free_memory()  # what parsing and rewriting the model freed
    log.info("model %s loaded: explains %s -> %s", folder.name, loaded.input, loaded.output)
    return loaded


def load_model(folder: Path, sessions: SessionFactory) -> LoadedModel:
    check_inside_repository(folder, folder / MODEL_FILE, folder / CONFIG_FILE)
    config = load_config(folder)
    path = folder / MODEL_FILE
    model = onnx.load(str(path))
    ends = Endpoints(config.input or default_input(model), config.output or default_output(model))
    # The default method is built now: a model that cannot be explained fails here, at
    # start-up, and the most common request finds its session ready.
    key = SessionKey(config.default_method)
    layer = _default_layer(model, ends)
    explain = explain_recipe(model, config.default_method, None, recipe_options(ends))
    del model
    _check_single_input(explain, ends.input)
    loaded = LoadedModel(
        name=folder.name,
        config=config,
        input=_spec(explain, ends.input),
        output=_spec(explain, ends.output),
        path=path,
        factory=sessions,
        sanity=_sanity_report(folder),
        layer=layer,
    )
    loaded.adopt(key, explain)
    return loaded


def _default_layer(model: onnx.ModelProto, ends: Endpoints) -> str | None:
    """Read now, from the version being loaded: a reload may replace the file later."""
    try:
        return default_layer(model, ends.input, ends.output)
    except RewriteError:
        return None


def _sanity_report(folder: Path) -> SanityReport | None:
    # A damaged report must not take the model down: it is advice to operators, not config.
    try:
        check_inside_repository(folder, folder / REPORT_FILE)
        return read_report(folder)
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        log.warning("model %s: ignoring its sanity.json (%s)", folder.name, exc)
        return None


def _check_single_input(model: onnx.ModelProto, input_name: str) -> None:
    inits = {t.name for t in model.graph.initializer}
    others = [
        vi.name
        for vi in model.graph.input
        if vi.name not in inits and vi.name not in (input_name, GRAD_INPUT, TARGETS_INPUT)
    ]
    if others:
        raise ConfigError(f"the server explains one-input models; this one also needs {others}")


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    graph = model.graph
    return {vi.name: vi for vi in (*graph.value_info, *graph.input, *graph.output)}


def _spec(model: onnx.ModelProto, name: str) -> Spec:
    info = _value_infos(model).get(name)
    if info is None or not info.type.HasField("tensor_type"):
        raise RewriteError(f"the type of tensor {name!r} is unknown after shape inference")
    tensor_type = info.type.tensor_type
    # Exporters write a free dimension as a dim_param, leave it unset, or (Paddle) store
    # -1 or 0 as its value: all of them mean "any size".
    dims: Sequence[int | None] = [
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in tensor_type.shape.dim
    ]
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    return Spec(name, dtype, tuple(dims))
