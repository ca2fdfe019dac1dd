"""The merged graph of the gradient methods (server/combined.py) against each method's own
explain model: the same saliency bit for bit, the forward pass held once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxplain.graph_rewrite import SALIENCY_OUTPUT, default_input, default_output
from onnxplain.graph_rewrite.seeding import TARGETS_INPUT, TARGETS_OUTPUT
from onnxplain.server.combined import merge_explain_models
from onnxplain.server.store.repository import Endpoints, explain_model

from helpers.fd import session

DEMO = Path(__file__).resolve().parents[1] / "models" / "digits"
METHODS = ("guided", "vanilla", "deconvnet", "gradcam", "guided_gradcam", "input_x_gradient")


def test_merged_graph_gives_each_method_its_own_saliency() -> None:
    model = onnx.load(DEMO / "model.onnx")
    ends = Endpoints(default_input(model), default_output(model))
    alone = {m: explain_model(model, m, ends) for m in METHODS}
    merged, names = merge_explain_models({m: explain_model(model, m, ends) for m in METHODS})
    onnx.checker.check_model(merged)
    convs = [n for n in merged.graph.node if n.op_type == "Conv" and "::" not in n.name]
    forward_convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(merged.graph.node) < sum(len(m.graph.node) for m in alone.values())
    assert len(convs) >= len(forward_convs)  # the forward convs, once, unprefixed
    x = np.concatenate([np.load(p) for p in sorted((DEMO / "samples").glob("*.npy"))])
    feeds = {ends.input: x, TARGETS_INPUT: np.array([-1, 1, 2, -1, 4], np.int64)}
    options = ort.RunOptions()
    options.only_execute_path_to_fetches = True
    together = session(merged)
    for method in METHODS:
        want = session(alone[method]).run([SALIENCY_OUTPUT, TARGETS_OUTPUT], feeds)
        got = together.run([names[method], TARGETS_OUTPUT], feeds, options)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
