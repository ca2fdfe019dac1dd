"""The ONNX runtimes the conformance tests run explain models on, by name.

ONNXPLAIN_RUNTIMES (comma-separated, default "onnxruntime-cpu,openvino-cpu") chooses them;
onnxruntime CPU is the reference every other runtime is compared with, so it always runs.

A runtime that cannot be loaded fails its tests under CI (env CI set): a skip there would
hide a broken install. Elsewhere a missing GPU runtime skips, a missing CPU one fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnxplain.server.runtime.engines import GPU_RUNTIMES, RUNTIMES, EngineOptions, load_engine
from onnxplain.server.runtime.engines import missing as _missing

from helpers.model_files import loadable
from helpers.tools import in_ci

REFERENCE = "onnxruntime-cpu"
DEFAULT = "onnxruntime-cpu,openvino-cpu"

# A loaded model: feeds in, the named outputs out, in order.
Run = Callable[[Mapping[str, np.ndarray], Sequence[str]], list[np.ndarray]]


def chosen() -> list[str]:
    """The runtimes to test, from ONNXPLAIN_RUNTIMES."""
    names = [n.strip() for n in os.environ.get("ONNXPLAIN_RUNTIMES", DEFAULT).split(",")]
    unknown = [n for n in names if n and n not in RUNTIMES]
    if unknown:
        raise ValueError(f"ONNXPLAIN_RUNTIMES names {unknown}; known: {sorted(RUNTIMES)}")
    return [n for n in names if n]


def others() -> list[str]:
    """The chosen runtimes that are compared with the reference (onnxruntime CPU)."""
    return [n for n in chosen() if n != REFERENCE]


def missing(name: str) -> str | None:
    """Why runtime `name` cannot run here, or None when it can."""
    return _missing(name)


def load(name: str, model: onnx.ModelProto) -> Run:
    """`model` loaded on runtime `name` through the server's runtime interface (one thread);
    fails or skips where the runtime is missing.

    Only a missing runtime skips (a GPU one, outside CI); a runtime that is there but
    rejects the model fails the test.
    """
    reason = missing(name)
    if reason is not None:
        if name in GPU_RUNTIMES and not in_ci():
            pytest.skip(reason)
        pytest.fail(f"runtime {name} is missing: {reason}")
    with loadable(model) as source:  # a large model from a file: fewer copies of its weights
        engine = load_engine(name, source, EngineOptions(threads=1))
    return lambda feeds, names: engine.run(names, feeds)
