"""Shared by the server and client tests: a model repository in a temp folder, a running server.

The repository holds the shipped demo model plus two that must fail to load (a file that is
not ONNX, and a graph with an op that has no backward rule), so every test also checks that
one broken model does not stop the others from serving.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper
from onnxplain.graph_rewrite import GRAD_INPUT, SALIENCY_OUTPUT, build_explain_model
from onnxplain.server import Explainer, Limits, Repository, Service, SessionFactory, build_server

from helpers.fd import session

DEMO = Path(__file__).resolve().parents[2] / "models" / "digits"
SAMPLES = DEMO / "samples"


def make_repository(root: Path) -> Path:
    shutil.copytree(DEMO, root / "digits")
    (root / "garbage").mkdir()
    (root / "garbage" / "model.onnx").write_bytes(b"this is not an ONNX model")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Acosh", ["x"], ["y"])], "norule", [x], [y])
    (root / "norule").mkdir()
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        root / "norule" / "model.onnx",
    )
    return root


@contextmanager
def running_server(
    root: Path,
    max_batch: int = 16,
    max_concurrent: int = 4,
    max_message_bytes: int = 1 << 20,
    reflection: bool = False,
) -> Iterator[tuple[Service, Explainer]]:
    core = Explainer(
        Repository.load(root, SessionFactory("cpu", threads=1)), max_batch, max_concurrent
    )
    limits = Limits(max_message_bytes, max_concurrent)
    service = build_server(core, "127.0.0.1", 0, limits, with_reflection=reflection)
    try:
        yield service, core
    finally:
        service.server.stop(None).wait()


def direct_explain(
    method: str,
    x: np.ndarray,
    targets: np.ndarray | None = None,
    model_file: Path = DEMO / "model.onnx",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The oracle: the demo model (or another) and its explain model run straight in
    onnxruntime."""
    model = onnx.load(model_file)
    (scores,) = session(model).run(None, {"input": x})
    if targets is None:
        targets = scores.argmax(axis=1)
    seed = np.zeros_like(scores)
    seed[np.arange(len(x)), targets] = 1
    explain = session(build_explain_model(model, method))  # type: ignore[arg-type]
    saliency = explain.run([SALIENCY_OUTPUT], {"input": x, GRAD_INPUT: seed})[0]
    return saliency, scores, np.asarray(targets)


def save_variant(path: Path) -> Path:
    """The demo model with other weights (the first conv's negated, the last one's doubled)
    written to `path` by rename, as an operator replacing a model should."""
    model = onnx.load(DEMO / "model.onnx")
    for tensor in model.graph.initializer:
        if tensor.name in ("0.weight", "8.weight"):
            scale = -1.0 if tensor.name == "0.weight" else 2.0
            values = onnx.numpy_helper.to_array(tensor) * np.float32(scale)
            tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    partial = path.with_name(path.name + ".tmp")
    onnx.save(model, partial)
    partial.replace(path)
    return path
