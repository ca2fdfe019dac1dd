"""onnxruntime sessions: the options every session of the server shares, and the device.

The seam between the repository (which knows models and methods) and onnxruntime: a session
is built from an ONNX model with its large weights taken from the model's `WeightStore`.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

from .weights import WeightStore


class DeviceUnavailable(RuntimeError):
    """The requested execution provider is not available in this onnxruntime build."""


class SessionFactory:
    """onnxruntime sessions on one device, with the same options for every model."""

    def __init__(self, device: str = "cpu", threads: int = 0) -> None:
        self.providers = _providers(device)
        self.device = device
        self.threads = threads

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        # The server holds several sessions; spinning threads of one slow the others.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Pre-packed weights are a second, private copy per session (for VGG-19's Gemms,
        # 490 MB each); at the batch sizes served they bought no measurable speed.
        options.add_session_config_entry("session.disable_prepacking", "1")
        return options

    def session(
        self, model: onnx.ModelProto, weights: WeightStore | None = None
    ) -> ort.InferenceSession:
        options = self.options()
        if weights is not None:
            weights.share(model, options)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=self.providers)
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
