"""The merge pass (graph_rewrite/merge.py, through merged_recipe) against each method's own
explain model: the same saliency bit for bit, the forward pass held once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxplain.graph_rewrite import (
    TARGETS_INPUT,
    TARGETS_OUTPUT,
    RecipeOptions,
    explain_recipe,
    merged_recipe,
)

from helpers.fd import session

DEMO = Path(__file__).resolve().parents[1] / "models" / "digits"
METHODS = ("guided", "vanilla", "deconvnet", "gradcam", "guided_gradcam", "input_x_gradient")
# As the server builds them: seeded from targets in the graph, the logits an output too.
SERVED = RecipeOptions(target="onnxruntime", seed_from="targets", expose_output=True)


def _samples() -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted((DEMO / "samples").glob("*.npy"))])


def test_merged_graph_gives_each_method_its_own_saliency() -> None:
    model = onnx.load(DEMO / "model.onnx")
    alone = {m: explain_recipe(model, m, None, SERVED) for m in METHODS}
    merged, names = merged_recipe(model, METHODS, SERVED)
    onnx.checker.check_model(merged)
    convs = [n for n in merged.graph.node if n.op_type == "Conv" and "::" not in n.name]
    forward_convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(merged.graph.node) < sum(len(m.graph.node) for m in alone.values())
    assert len(convs) >= len(forward_convs)  # the forward convs, once, unprefixed
    input_name = model.graph.input[0].name
    feeds = {input_name: _samples(), TARGETS_INPUT: np.array([-1, 1, 2, -1, 4], np.int64)}
    options = ort.RunOptions()
    options.only_execute_path_to_fetches = True
    together = session(merged)
    for method in METHODS:
        want = session(alone[method]).run(["saliency", TARGETS_OUTPUT], feeds)
        got = together.run([names[method], TARGETS_OUTPUT], feeds, options)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_merged_graph_keeps_a_chosen_saliency_name() -> None:
    """Each method's map is found under the name the options give, not under a fixed one."""
    model = onnx.load(DEMO / "model.onnx")
    options = RecipeOptions(saliency_name="heat", grad_name="seed")
    merged, names = merged_recipe(model, ("vanilla", "guided"), options)
    assert names == {"vanilla": "heat", "guided": "guided::heat"}
    outputs = {o.name for o in merged.graph.output}
    assert {"heat", "guided::heat"} <= outputs
    x = _samples()[:2]
    seed = np.eye(10, dtype=np.float32)[[3, 7]]
    input_name = model.graph.input[0].name
    feeds = {input_name: x, "seed": seed}
    got = session(merged).run(["heat", "guided::heat"], feeds)
    for method, value in zip(("vanilla", "guided"), got, strict=True):
        alone = explain_recipe(model, method, None, options)
        np.testing.assert_array_equal(value, session(alone).run(["heat"], feeds)[0])
