"""Which runtime an explain model is built for.

"portable" (the default) uses only formulations that every conforming ONNX runtime
evaluates the same way; it is what `convert` writes unless told otherwise. A named
runtime may get formulations that are faster there and checked there, but that another
engine may evaluate differently or slowly (TensorRT has no MaxPool Indices output, OpenVINO
runs it on a slow reference kernel and computes a weight shared between a forward and a
backward op wrong): such a model is for that runtime only.
"""

from __future__ import annotations

from typing import Literal, cast

Target = Literal["portable", "onnxruntime"]
TARGETS: tuple[Target, ...] = ("portable", "onnxruntime")


def check_target(target: str) -> Target:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return cast(Target, target)
