"""One ONNX model loaded on one runtime, its inputs bound, ready to be run again and again.

A timing harness over the server's runtime interface (onnxplain.server.runtime.engines):
both runtimes get the same number of threads and full float32 precision, set up as a
latency-bound server would set them up: one request at a time, no idle-thread spinning
(onnxruntime, unless asked) and one stream (OpenVINO, compiled for the bound shapes).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from onnxplain.server.runtime.engines import (
    EngineOptions,
    OpenVinoEngine,
    load_engine,
)

Runtime = Literal["onnxruntime", "openvino"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "openvino")
SHORT: dict[Runtime, str] = {"onnxruntime": "ort", "openvino": "ov"}
_NAMES: dict[Runtime, str] = {"onnxruntime": "onnxruntime-cpu", "openvino": "openvino-cpu"}


class Engine:
    """A loaded model with its feeds bound: `run()` times one inference, `output(name)`
    reads the last one's outputs (running once if none ran yet)."""

    def __init__(
        self, runtime: Runtime, model: onnx.ModelProto, feeds: dict[str, np.ndarray], **options
    ) -> None:
        shapes = {name: value.shape for name, value in feeds.items()}
        self.engine = load_engine(
            _NAMES[runtime], model, EngineOptions(static_shapes=shapes, **options)
        )
        self.feeds = feeds
        self.names = [o.name for o in model.graph.output]
        self.last: list[np.ndarray] = []

    def run(self) -> None:
        self.last = self.engine.run(self.names, self.feeds)

    def output(self, name: str) -> np.ndarray:
        if not self.last:
            self.run()
        return self.last[self.names.index(name)]

    def profile(self) -> list[tuple[str, str, float]]:
        """OpenVINO's (layer name, layer type, milliseconds) of the last run, when loaded
        with profiling=True."""
        assert isinstance(self.engine, OpenVinoEngine), "only OpenVINO profiles per layer"
        return self.engine.profile()


def load(
    runtime: Runtime,
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    threads: int,
    spinning: bool = False,
    profiling: bool = False,
) -> Engine:
    return Engine(runtime, model, feeds, threads=threads, spinning=spinning, profiling=profiling)
