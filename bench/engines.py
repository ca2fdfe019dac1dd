"""One ONNX model loaded on one runtime, its inputs bound, ready to be run again and again.

Both runtimes get the same number of threads and full float32 precision, and are set up
as a latency-bound server would set them up: one request at a time, no idle-thread
spinning (onnxruntime) and one stream (OpenVINO).
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov

Runtime = Literal["onnxruntime", "openvino"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "openvino")
SHORT: dict[Runtime, str] = {"onnxruntime": "ort", "openvino": "ov"}


class Engine(Protocol):
    def run(self) -> None:
        """One inference on the bound inputs."""

    def output(self, name: str) -> np.ndarray:
        """The named output of the last inference (of a new one if none ran yet)."""


class OnnxRuntimeEngine:
    def __init__(
        self, model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, spinning: bool
    ) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        spin = "1" if spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        self.session = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        self.feeds = feeds
        self.names = [o.name for o in self.session.get_outputs()]
        self.last: list[np.ndarray] = []

    def run(self) -> None:
        self.last = self.session.run(None, self.feeds)

    def output(self, name: str) -> np.ndarray:
        if not self.last:
            self.run()
        return np.asarray(self.last[self.names.index(name)])


class OpenVinoEngine:
    _core: ov.Core | None = None

    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: dict[str, np.ndarray],
        threads: int,
        profiling: bool = False,
    ) -> None:
        if OpenVinoEngine._core is None:
            OpenVinoEngine._core = ov.Core()
        core = OpenVinoEngine._core
        graph = core.read_model(model.SerializeToString())
        # Static shapes, as OpenVINO recommends: a dynamic-size model (an OCR detector)
        # would otherwise be compiled for any size and run slower than it can.
        graph.reshape({name: list(value.shape) for name, value in feeds.items()})
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,  # the cores are shared with other processes
            "PERF_COUNT": profiling,
        }
        self.compiled = core.compile_model(graph, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.feeds = feeds
        self.ran = False

    def run(self) -> None:
        self.request.infer(self.feeds, share_inputs=True, share_outputs=True)
        self.ran = True

    def output(self, name: str) -> np.ndarray:
        if not self.ran:
            self.run()
        return np.array(self.request.get_tensor(self.compiled.output(name)).data)

    def profile(self) -> list[tuple[str, str, float]]:
        """(layer name, layer type, milliseconds) of the last inference, when built with
        `profiling`."""
        return [
            (info.node_name, info.node_type, info.real_time.total_seconds() * 1e3)
            for info in self.request.profiling_info
        ]


def load(
    runtime: Runtime,
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    threads: int,
    spinning: bool = False,
) -> Engine:
    if runtime == "onnxruntime":
        return OnnxRuntimeEngine(model, feeds, threads, spinning)
    return OpenVinoEngine(model, feeds, threads)
