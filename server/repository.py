"""The model repository: DIR/<name>/model.onnx (+ config.toml), loaded into onnxruntime.

Every explain model (one per method) and its session are built eagerly when the server
starts. Building is what can fail (an op without a backward rule, a malformed config), and
eager building reports that in the log and in ListModels before any client asks, instead
of failing the first request; it also keeps the first request as fast as the others. The
cost is start-up time and memory: three explain sessions and a forward session per model.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, shape_inference
from onnxplain.graph_rewrite import (
    GRAD_INPUT,
    METHODS,
    Method,
    RewriteError,
    build_explain_model,
    default_input,
    default_output,
)
from onnxplain.sanity import SanityReport, read_report

from .config import ModelConfig, load_config
from .errors import ConfigError, ModelNotFound, ModelUnavailable
from .method_sessions import LazySessions
from .reasons import failure_reason
from .scan import MODEL_FILE, empty_hint, model_folders, skipped_hints

log = logging.getLogger(__name__)


class DeviceUnavailable(RuntimeError):
    """The requested execution provider is not available in this onnxruntime build."""


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


@dataclass
class LoadedModel:
    name: str
    config: ModelConfig
    input: Spec
    output: Spec
    forward: ort.InferenceSession  # gives the scores when targets must be picked first
    explain: dict[Method, ort.InferenceSession]
    # The newer methods' sessions, built when first asked for (method_sessions.py).
    lazy: LazySessions | None = None
    sanity: SanityReport | None = None  # `onnxplain sanity --write`'s sanity.json, if any


@dataclass(frozen=True)
class FailedModel:
    name: str
    error: str  # for clients: no paths, no traceback


class SessionFactory:
    """onnxruntime sessions on one device, with the same options for every model."""

    def __init__(self, device: str = "cpu", threads: int = 0) -> None:
        self.providers = _providers(device)
        self.device = device
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = threads
        # The server holds several sessions; spinning threads of one slow the others.
        self.options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def session(self, model: onnx.ModelProto) -> ort.InferenceSession:
        session = ort.InferenceSession(
            model.SerializeToString(), self.options, providers=self.providers
        )
        if session.get_providers()[0] != self.providers[0]:
            # onnxruntime falls back to the CPU when CUDA fails to initialise: say so.
            raise DeviceUnavailable(
                f"onnxruntime could not start {self.providers[0]} (got {session.get_providers()})"
            )
        return session


def _providers(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DeviceUnavailable(
                "--device cuda needs onnxruntime-gpu with CUDAExecutionProvider; this "
                f"onnxruntime {ort.__version__} offers only {', '.join(available)}"
            )
        # Ops without a CUDA kernel still run on the CPU, as onnxruntime places them.
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise DeviceUnavailable(f"unknown device {device!r}; use cpu or cuda")


class Repository:
    """Every model in a folder, each either loaded or failed with a reason.

    `replace` swaps one model's entry while requests run (server/reload.py decides what to
    swap): readers always see a whole dict, since a swap builds a new one and rebinds it.
    """

    def __init__(self, models: dict[str, LoadedModel | FailedModel]) -> None:
        self._models = models
        self._reload_errors: dict[str, str] = {}
        self._swap = threading.Lock()

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
        # One line; the traceback only at debug level: the reason is what operators act on.
        reason = failure_reason(exc)
        log.error("model %s is unavailable: %s", folder.name, reason)
        log.debug("model %s failed to load", folder.name, exc_info=True)
        return FailedModel(folder.name, reason)
    log.info("model %s loaded: explains %s -> %s", folder.name, loaded.input, loaded.output)
    return loaded


def load_model(folder: Path, sessions: SessionFactory) -> LoadedModel:
    config = load_config(folder)
    model = onnx.load(str(folder / MODEL_FILE))
    input_name = config.input or default_input(model)
    output_name = config.output or default_output(model)
    # The server runs onnxruntime, so it takes the formulations that are fastest there.
    explain_models = {
        method: build_explain_model(model, method, input_name, output_name, target="onnxruntime")
        for method in METHODS
    }
    reference = explain_models[METHODS[0]]
    _check_single_input(reference, input_name)
    forward = _with_output(shape_inference.infer_shapes(model), output_name)
    return LoadedModel(
        name=folder.name,
        config=config,
        input=_spec(reference, input_name),
        output=_spec(reference, output_name),
        forward=sessions.session(forward),
        explain={
            m: sessions.session(_with_output(e, output_name)) for m, e in explain_models.items()
        },
        lazy=LazySessions(model, input_name, output_name, sessions.session),
        sanity=_sanity_report(folder),
    )


def _sanity_report(folder: Path) -> SanityReport | None:
    # A damaged report must not take the model down: it is advice to operators, not config.
    try:
        return read_report(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("model %s: ignoring its sanity.json (%s)", folder.name, exc)
        return None


def _check_single_input(model: onnx.ModelProto, input_name: str) -> None:
    inits = {t.name for t in model.graph.initializer}
    others = [
        vi.name
        for vi in model.graph.input
        if vi.name not in inits and vi.name not in (input_name, GRAD_INPUT)
    ]
    if others:
        raise ConfigError(f"the server explains one-input models; this one also needs {others}")


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    graph = model.graph
    return {vi.name: vi for vi in (*graph.value_info, *graph.input, *graph.output)}


def _with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The model with `name` as a graph output too: the explained output may be internal."""
    if name in {o.name for o in model.graph.output}:
        return model
    info = _value_infos(model).get(name)
    model.graph.output.append(
        info if info is not None else helper.make_empty_tensor_value_info(name)
    )
    return model


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
