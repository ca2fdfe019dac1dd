"""Why HardSwish's float32 slope owns its kink at x = 3 from the left (rectifiers.py): PP-OCR
orientation's guided SmoothGrad (test_batch_methods_real.py's input, seed and noise, Relu-only
rectifiers), onnxruntime CPU against OpenVINO CPU, with the upper step as shipped ([x <= 3])
and as torch's convention would have it ([x < 3]); then every HardSwish input the two
runtimes put on different sides of a kink, or exactly on one.

    python bench/hardswish_kinks.py        # ~1 min

Prints the relative L2 distance of the two runtimes' maps per form and the kink points.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_batch_methods_real as real
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.rules import rectifiers
from test_models_wheels import CASES, fixed_input_shape

from helpers import realmodels, runtimes

NAME, OTHER = "orientation", "openvino-cpu"
PARAMS = real.BATCH_METHODS["smoothgrad"]


def explain(model: onnx.ModelProto, upper_step: float) -> onnx.ModelProto:
    """The SmoothGrad model with the upper step at [x < upper_step]."""
    shipped = rectifiers._THREE_UP
    rectifiers._THREE_UP = upper_step
    try:
        return build_explain_model(model, "smoothgrad", params=PARAMS, rectifiers="relu")
    finally:
        rectifiers._THREE_UP = shipped


def kink_points(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    inputs = [n.input[0] for n in model.graph.node if n.op_type == "HardSwish"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in inputs)
    ours = runtimes.load(runtimes.REFERENCE, probe)(feeds, inputs)
    theirs = runtimes.load(OTHER, probe)(feeds, inputs)
    print(f"{len(inputs)} HardSwish inputs, {sum(a.size for a in ours)} values")
    for name, a, b in zip(inputs, ours, theirs):
        for kink in (-3.0, 3.0):
            split = (a > kink) != (b > kink)
            on = (a == kink) | (b == kink)
            for i in zip(*np.nonzero(split | on)):
                print(f"  kink {kink:+.0f} at {name}{list(map(int, i))}: ort {a[i]!r}, ov {b[i]!r}")


def main() -> None:
    case = CASES[NAME]
    model = fixed_input_shape(realmodels.load(case.model), case.shape)
    shipped = explain(model, rectifiers._THREE_UP)
    feeds = real.seeded_feeds(NAME, shipped, model)
    for label, upper in (("[x <= 3] (shipped)", rectifiers._THREE_UP), ("[x < 3] (torch)", 3.0)):
        m = explain(model, upper)
        want = runtimes.load(runtimes.REFERENCE, m)(feeds, ["saliency"])[0]
        got = runtimes.load(OTHER, m)(feeds, ["saliency"])[0]
        l2 = np.linalg.norm(got - want) / np.linalg.norm(want)
        print(f"upper step {label}: ort vs ov relative L2 {l2:.3g} (bound {real.BOUND:g})")
    kink_points(shipped, feeds)


if __name__ == "__main__":
    main()
