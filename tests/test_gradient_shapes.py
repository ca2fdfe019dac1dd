"""Gradient shapes declared in the explain model (graph_rewrite/gradient_shapes.py): with a
free batch, onnxruntime's blocked NCHWc layout keeps the ReLU masks' products as it does
with the batch fixed, for the plain methods, SmoothGrad and the merged served graph; and the
maps are float64 autograd's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxplain.graph_rewrite import (
    RecipeOptions,
    build_explain_model,
    merged_recipe,
)
from torch import nn

from helpers.nets import export_onnx
from helpers.oracle import float64_gradient, relative_l2

CLASSES = 10


class Residual(nn.Module):
    """A ResNet-like net whose channels fill onnxruntime's NCHWc blocks (16)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.body = nn.Conv2d(32, 32, 3, padding=1)
        self.skip = nn.Conv2d(16, 32, 1, stride=2)
        self.out = nn.Conv2d(32, 32, 1)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.stem(x))
        b = torch.relu(self.body(torch.relu(self.down(a))) + self.skip(a))
        c = torch.relu(self.out(b))
        return self.head(c.mean((2, 3)))


@pytest.fixture(scope="module")
def exported() -> tuple[nn.Module, onnx.ModelProto]:
    torch.manual_seed(0)
    net = Residual().eval()
    return net, export_onnx(net, torch.zeros(1, 3, 20, 20), softmax=False)


def _fixed_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in (*fixed.graph.input, *fixed.graph.output):
        value.type.tensor_type.shape.dim[0].Clear()
        value.type.tensor_type.shape.dim[0].dim_value = batch
    del fixed.graph.value_info[:]
    return fixed


def _optimized(model: onnx.ModelProto, tmp_path: Path) -> onnx.ModelProto:
    """The graph onnxruntime CPU runs (full optimisation, its NCHWc transformer included)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def _reorders(model: onnx.ModelProto, tmp_path: Path) -> int:
    ops = [n.op_type for n in _optimized(model, tmp_path).graph.node]
    return ops.count("ReorderInput") + ops.count("ReorderOutput")


def _without_declared_gradients(explain: onnx.ModelProto, forward: onnx.ModelProto) -> None:
    forward_tensors = {t for n in forward.graph.node for t in n.output}
    kept = [vi for vi in explain.graph.value_info if vi.name in forward_tensors]
    del explain.graph.value_info[:]
    explain.graph.value_info.extend(kept)


@pytest.mark.parametrize("method", ["vanilla", "guided"])
def test_free_batch_keeps_the_blocked_layout_of_a_fixed_batch(
    exported: tuple[nn.Module, onnx.ModelProto], tmp_path: Path, method: str
) -> None:
    net, model = exported
    free = build_explain_model(model, method, target="onnxruntime")
    fixed = build_explain_model(_fixed_batch(model, 3), method, target="onnxruntime")
    declared = {vi.name for vi in free.graph.value_info} - {
        t for n in model.graph.node for t in n.output
    }
    assert declared, "no gradient shape was declared"
    free_reorders, fixed_reorders = _reorders(free, tmp_path), _reorders(fixed, tmp_path)
    assert free_reorders <= fixed_reorders, (free_reorders, fixed_reorders)
    # The check can fail: without the declared shapes the free batch loses the layout.
    _without_declared_gradients(free, model)
    assert _reorders(free, tmp_path) > fixed_reorders
    if method == "vanilla":  # and the map is autograd's, at a batch of 3
        explain = build_explain_model(model, method, target="onnxruntime")
        x = np.random.default_rng(1).standard_normal((3, 3, 20, 20)).astype(np.float32)
        seed = np.random.default_rng(2).standard_normal((3, CLASSES)).astype(np.float32)
        session = ort.InferenceSession(
            explain.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(["saliency"], {"image": x, "output_grad": seed})
        want = float64_gradient(net, x, lambda out: out * torch.from_numpy(seed).double())
        assert relative_l2(got, want) < 1e-5


def test_smoothgrad_copies_keep_the_blocked_layout(
    exported: tuple[nn.Module, onnx.ModelProto], tmp_path: Path
) -> None:
    """SmoothGrad's copies have a batch no inference can name (S·N, computed at run time)."""
    _, model = exported
    params = {"samples": 4, "seed": 0}
    smooth = build_explain_model(model, "smoothgrad", target="onnxruntime", params=params)
    fixed = build_explain_model(_fixed_batch(model, 4), "vanilla", target="onnxruntime")
    # The copies' forward and backward, and one forward of x more than the fixed model.
    with_layout = _reorders(smooth, tmp_path)
    _without_declared_gradients(smooth, model)
    without = _reorders(smooth, tmp_path)
    assert with_layout <= _reorders(fixed, tmp_path) + 2 < without, with_layout


def test_merged_served_graph_keeps_each_methods_declared_shapes(
    exported: tuple[nn.Module, onnx.ModelProto], tmp_path: Path
) -> None:
    """merge.py renames a method's own backward nodes ("guided::..."); their declared
    shapes come along under the new names."""
    _, model = exported
    options = RecipeOptions(target="onnxruntime", seed_from="targets", expose_output=True)
    methods = ("vanilla", "guided", "deconvnet")
    merged, _ = merged_recipe(model, methods, options)
    tensors = {t for n in merged.graph.node for t in n.output}
    declared = [vi.name for vi in merged.graph.value_info]
    assert set(declared) <= tensors
    assert any(name.startswith("guided::") for name in declared)
    assert any(name.startswith("deconvnet::") for name in declared)
    alone = _reorders(merged_recipe(_fixed_batch(model, 2), methods, options)[0], tmp_path)
    assert _reorders(merged, tmp_path) <= alone
