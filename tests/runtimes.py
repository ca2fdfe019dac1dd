"""The ONNX runtimes the conformance tests run explain models on, by name.

ONNXPLAIN_RUNTIMES (comma-separated, default "onnxruntime-cpu,openvino-cpu") chooses them;
onnxruntime CPU is the reference every other runtime is compared with, so it always runs.

A runtime that cannot be loaded fails its tests under CI (env CI set): a skip there would
hide a broken install. Elsewhere a missing GPU runtime skips, a missing CPU one fails.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model_files import loadable
from tools import in_ci

REFERENCE = "onnxruntime-cpu"
DEFAULT = "onnxruntime-cpu,openvino-cpu"
GPU_RUNTIMES = ("onnxruntime-cuda", "onnxruntime-tensorrt")

# A loaded model: feeds in, the named outputs out, in order.
Run = Callable[[Mapping[str, np.ndarray], Sequence[str]], list[np.ndarray]]


def chosen() -> list[str]:
    """The runtimes to test, from ONNXPLAIN_RUNTIMES."""
    names = [n.strip() for n in os.environ.get("ONNXPLAIN_RUNTIMES", DEFAULT).split(",")]
    unknown = [n for n in names if n and n not in LOADERS]
    if unknown:
        raise ValueError(f"ONNXPLAIN_RUNTIMES names {unknown}; known: {sorted(LOADERS)}")
    return [n for n in names if n]


def others() -> list[str]:
    """The chosen runtimes that are compared with the reference (onnxruntime CPU)."""
    return [n for n in chosen() if n != REFERENCE]


def _ort(providers: list[str | tuple[str, dict[str, str]]]) -> Callable[[onnx.ModelProto], Run]:
    def load(model: onnx.ModelProto) -> Run:
        if len(providers) > 1 or providers[0] != "CPUExecutionProvider":
            # onnxruntime-gpu (>= 1.21) loads CUDA and cuDNN from the nvidia-* wheels.
            getattr(ort, "preload_dlls", lambda: None)()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3  # IR-3 models warn once per weight listed as an input
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with loadable(model) as source:
            sess = ort.InferenceSession(source, opts, providers=providers)
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if sess.get_providers()[0] != wanted:
            # onnxruntime falls back to CPU silently when a provider fails to load.
            raise RuntimeError(f"{wanted} did not load; the session runs on {sess.get_providers()}")
        return lambda feeds, names: list(sess.run(list(names), dict(feeds)))

    return load


def _openvino(model: onnx.ModelProto) -> Run:
    import openvino as ov

    core = ov.Core()
    with loadable(model) as source:
        read = core.read_model(io.BytesIO(source) if isinstance(source, bytes) else source)
        # f32 explicitly: on CPUs with bf16 or AMX units OpenVINO would otherwise run in bf16.
        compiled = core.compile_model(
            read, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
        )
        del read  # its weights: the compiled model has its own

    def run(feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        results = compiled(dict(feeds))
        return [np.asarray(results[compiled.output(n)]) for n in names]

    return run


LOADERS: dict[str, Callable[[onnx.ModelProto], Run]] = {
    "onnxruntime-cpu": _ort(["CPUExecutionProvider"]),
    "openvino-cpu": _openvino,
    # TF32 off: it rounds convolution inputs to 10 mantissa bits, which is not what the
    # conformance tests measure (float32 maps).
    "onnxruntime-cuda": _ort([("CUDAExecutionProvider", {"use_tf32": "0"})]),
    # fp16 off (the explain model's float32 ReLU masks are exact in f32/bf16, not f16);
    # the CUDA provider runs what TensorRT does not take.
    "onnxruntime-tensorrt": _ort(
        [
            ("TensorrtExecutionProvider", {"trt_fp16_enable": "False"}),
            ("CUDAExecutionProvider", {"use_tf32": "0"}),
        ]
    ),
}


_PROVIDERS = {
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


def missing(name: str) -> str | None:
    """Why runtime `name` cannot run here, or None when it can."""
    if name == "openvino-cpu":
        try:
            import openvino  # noqa: F401
        except ImportError as error:
            return f"openvino does not import: {error}"
    provider = _PROVIDERS.get(name)
    if provider and provider not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {provider} ({ort.get_available_providers()})"
    return None


def load(name: str, model: onnx.ModelProto) -> Run:
    """`model` loaded on runtime `name`; fails or skips where the runtime is missing.

    Only a missing runtime skips (a GPU one, outside CI); a runtime that is there but
    rejects the model fails the test.
    """
    reason = missing(name)
    if reason is not None:
        if name in GPU_RUNTIMES and not in_ci():
            pytest.skip(reason)
        pytest.fail(f"runtime {name} is missing: {reason}")
    return LOADERS[name](model)
