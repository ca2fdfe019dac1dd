"""One interface over the runtimes that run explain models: load a model, then
`run(fetches, feeds, cancel)`.

The server runs onnxruntime sessions built with its own options (sessions.py wraps them as
`OnnxRuntimeEngine`); the conformance tests and the benchmarks load the same interface by
runtime name (`load_engine`), so that "runs on any ONNX runtime" is checked through the
code that serves it. OpenVINO is imported only when asked for: the server does not need it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort


class Cancel:
    """A run's stop switch, set from another thread (a caller that gave up, a deadline).

    onnxruntime checks its RunOptions' `terminate` flag between kernels, so a set switch
    stops a run under way; a runtime without that checks it only before starting."""

    def __init__(self) -> None:
        self.run_options = _run_options()

    def set(self) -> None:
        self.run_options.terminate = True

    @property
    def is_set(self) -> bool:
        return bool(self.run_options.terminate)


def _run_options() -> ort.RunOptions:
    options = ort.RunOptions()
    # Only what the fetches need: a merged graph holds several methods' outputs.
    options.only_execute_path_to_fetches = True
    return options


class Cancelled(RuntimeError):
    """The run was stopped through its `Cancel` before it finished."""


class Engine(Protocol):
    """One model loaded on one runtime."""

    def run(
        self,
        fetches: Sequence[str],
        feeds: Mapping[str, np.ndarray],
        cancel: Cancel | None = None,
    ) -> list[np.ndarray]:
        """The named outputs for these inputs, in the order of `fetches`."""
        ...


def spinning_entries(spinning: bool) -> dict[str, str]:
    """The session config entries of `--spinning`.

    Off (the default), onnxruntime's idle threads sleep between ops, and each op that runs
    in parallel waits for a worker to wake: on 2 cores that was 30% of a MobileNetV3-Large
    explain run (21.8 against 15.5 ms spinning). Spinning only while a run is in
    flight (`force_spinning_stop` stops the threads as the run returns, so an idle server
    uses no CPU and the server's other sessions, run one after another, lose nothing)
    takes that back, but where two runs overlap (two models, or `--max-concurrent` above 1)
    each one's spinning threads take the cores the other needs: 26% less throughput served
    (35-40% in-process) than sleeping threads in that case. Hence a flag, not the default."""
    if not spinning:
        # The server holds several sessions; spinning threads of one slow the others.
        return {"session.intra_op.allow_spinning": "0"}
    return {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}


@dataclass(frozen=True)
class EngineOptions:
    """How a test or benchmark loads a model; the server builds its own sessions."""

    threads: int = 1
    # Threads spinning for work while a run is in flight (`spinning_entries`).
    spinning: bool = False
    # OpenVINO compiles for these shapes (faster than a dynamic-shape compile).
    static_shapes: Mapping[str, Sequence[int]] | None = None
    profiling: bool = False


class OnnxRuntimeEngine:
    """An onnxruntime session behind the interface."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    def run(
        self,
        fetches: Sequence[str],
        feeds: Mapping[str, np.ndarray],
        cancel: Cancel | None = None,
    ) -> list[np.ndarray]:
        options = _run_options() if cancel is None else cancel.run_options
        try:
            outputs = self.session.run(list(fetches), dict(feeds), options)
        except Exception:
            if cancel is not None and cancel.is_set:
                raise Cancelled("the run was stopped") from None
            raise
        return [np.asarray(v) for v in outputs]


# A model as a runtime can load it: the proto, its serialized bytes, or the path of a file
# (with its weights beside it as external data: the runtimes then hold fewer copies of
# them while loading, which matters for models of a GB).
ModelSource = onnx.ModelProto | bytes | str


def _serialized(model: ModelSource) -> bytes | str:
    return model.SerializeToString() if isinstance(model, onnx.ModelProto) else model


class OpenVinoEngine:
    """An OpenVINO CPU compiled model, full float32 (no bf16 on CPUs that have it)."""

    _core: Any = None  # one ov.Core per process: each holds its own thread pools

    def __init__(self, model: ModelSource, options: EngineOptions) -> None:
        import openvino as ov

        if OpenVinoEngine._core is None:
            OpenVinoEngine._core = ov.Core()
        core = OpenVinoEngine._core
        source = _serialized(model)
        graph = core.read_model(io.BytesIO(source) if isinstance(source, bytes) else source)
        if options.static_shapes:
            graph.reshape({name: list(shape) for name, shape in options.static_shapes.items()})
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": options.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,  # the cores are shared with other processes
            "PERF_COUNT": options.profiling,
        }
        if any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops()):
            # A QDQ (int8) model runs its quantizers as the ONNX ops define them, in float,
            # as onnxruntime runs an explain model's: OpenVINO's low-precision passes
            # computed wrong explain maps (a two-conv int8 net: 0.22 from onnxruntime, 2e-7
            # without them; ResNet-18: 2.0 and 3e-7) while the forward outputs were right.
            config["LP_TRANSFORMS_MODE"] = "NO"
        self.compiled = core.compile_model(graph, "CPU", config)
        del graph  # its weights: the compiled model has its own
        self.request = self.compiled.create_infer_request()

    def run(
        self,
        fetches: Sequence[str],
        feeds: Mapping[str, np.ndarray],
        cancel: Cancel | None = None,
    ) -> list[np.ndarray]:
        if cancel is not None and cancel.is_set:
            raise Cancelled("the run was stopped before it started")
        self.request.infer(dict(feeds), share_inputs=True, share_outputs=True)
        # share_outputs: the request's buffers are reused by the next run, so copy.
        return [np.array(self.request.get_tensor(self.compiled.output(n)).data) for n in fetches]

    def profile(self) -> list[tuple[str, str, float]]:
        """(layer name, layer type, milliseconds) of the last run, when loaded with
        `profiling`."""
        return [
            (info.node_name, info.node_type, info.real_time.total_seconds() * 1e3)
            for info in self.request.profiling_info
        ]


# onnxruntime's execution providers by runtime name. TF32 off: it rounds convolution
# inputs to 10 mantissa bits, not what float32 maps are compared at. TensorRT fp16 off (the
# explain model's float32 ReLU masks are exact in f32, not in f16); the CUDA provider runs
# what TensorRT does not take.
_ORT_PROVIDERS: dict[str, list[str | tuple[str, dict[str, str]]]] = {
    "onnxruntime-cpu": ["CPUExecutionProvider"],
    "onnxruntime-cuda": [("CUDAExecutionProvider", {"use_tf32": "0"})],
    "onnxruntime-tensorrt": [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": "False"}),
        ("CUDAExecutionProvider", {"use_tf32": "0"}),
    ],
}
RUNTIMES: tuple[str, ...] = (*_ORT_PROVIDERS, "openvino-cpu")
GPU_RUNTIMES: tuple[str, ...] = ("onnxruntime-cuda", "onnxruntime-tensorrt")


def missing(name: str) -> str | None:
    """Why runtime `name` cannot run here, or None when it can."""
    if name not in RUNTIMES:
        return f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}"
    if name == "openvino-cpu":
        try:
            import openvino  # noqa: F401
        except ImportError as error:
            return f"openvino does not import: {error}"
        return None
    first = _ORT_PROVIDERS[name][0]
    provider = first if isinstance(first, str) else first[0]
    if provider not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {provider} ({ort.get_available_providers()})"
    return None


def load_engine(name: str, model: ModelSource, options: EngineOptions | None = None) -> Engine:
    """`model` loaded on runtime `name` (see RUNTIMES); a RuntimeError where the runtime is
    missing or quietly fell back to another device."""
    options = options or EngineOptions()
    reason = missing(name)
    if reason is not None:
        raise RuntimeError(reason)
    if name == "openvino-cpu":
        return OpenVinoEngine(model, options)
    providers = _ORT_PROVIDERS[name]
    if name != "onnxruntime-cpu":
        # onnxruntime-gpu (>= 1.21) loads CUDA and cuDNN from the nvidia-* wheels.
        getattr(ort, "preload_dlls", lambda: None)()
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.threads
    session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3  # IR-3 models warn once per weight listed as input
    session_options.enable_profiling = options.profiling
    for key, value in spinning_entries(options.spinning).items():
        session_options.add_session_config_entry(key, value)
    session = ort.InferenceSession(_serialized(model), session_options, providers=providers)
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if session.get_providers()[0] != wanted:
        # onnxruntime falls back to the CPU silently when a provider fails to load.
        raise RuntimeError(f"{wanted} did not load; the session runs on {session.get_providers()}")
    return OnnxRuntimeEngine(session)
