"""onnxruntime sessions: the options every session of the server shares, and the device.

The seam between the repository (which knows models and methods) and onnxruntime: a session
is built from an ONNX model with its large weights taken from the model's `WeightStore`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

import onnx
import onnxruntime as ort

from ..store.weights import WeightStore
from .engines import OnnxRuntimeEngine, spinning_entries


class DeviceUnavailable(RuntimeError):
    """The requested execution provider is not available in this onnxruntime build."""


_SHARED_ARENA = threading.Lock()
_shared_arena_ready = False


def _share_cpu_arena() -> None:
    """One CPU memory arena for every session of the process (`session.use_env_allocators`):
    each session's own arena holds the largest activations it has seen (about 110 MB for a
    VGG-19 explain run), and most of them sit idle while another session runs."""
    global _shared_arena_ready
    with _SHARED_ARENA:
        if not _shared_arena_ready:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            # Chunks grow by what is asked for (kSameAsRequested), not by doubling, which
            # can leave half of a large chunk unused.
            config = ort.OrtArenaCfg(0, 1, -1, -1)
            ort.create_and_register_allocator(info, config)
            _shared_arena_ready = True


def release_free_memory() -> None:
    """Gives the C heap's free pages back to the system (glibc only; elsewhere nothing).

    Building an explain model parses and copies the model several times; glibc keeps what
    those copies freed in its heaps (measured: 300-500 MB after each VGG-19 build)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class SessionFactory:
    """onnxruntime sessions on one device, with the same options for every model."""

    def __init__(self, device: str = "cpu", threads: int = 0, spinning: bool = False) -> None:
        self.providers = _providers(device)
        self.device = device
        self.threads = threads
        self.spinning = spinning
        if device == "cpu":
            _share_cpu_arena()

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        for key, value in spinning_entries(self.spinning).items():
            options.add_session_config_entry(key, value)
        # Pre-packed weights are a second, private copy per session (for VGG-19's Gemms,
        # 490 MB each); at the batch sizes served they bought no measurable speed.
        options.add_session_config_entry("session.disable_prepacking", "1")
        if self.device == "cpu":
            options.add_session_config_entry("session.use_env_allocators", "1")
        return options

    def session(
        self, model: onnx.ModelProto, weights: WeightStore | None = None
    ) -> OnnxRuntimeEngine:
        """An onnxruntime session of `model` with the server's options, behind the runtime
        interface (engines.py: `run(fetches, feeds, cancel)`)."""
        options = self.options()
        if weights is not None:
            weights.share(model, options)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=self.providers)
        # onnxruntime's Python session keeps the serialized model (weights included) for
        # a provider fallback this server never takes: 624 MB per session of VGG-19.
        if getattr(session, "_model_bytes", None) is not None:
            session._model_bytes = None
        if session.get_providers()[0] != self.providers[0]:
            # onnxruntime falls back to the CPU when CUDA fails to initialise: say so.
            raise DeviceUnavailable(
                f"onnxruntime could not start {self.providers[0]} (got {session.get_providers()})"
            )
        return OnnxRuntimeEngine(session)


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
