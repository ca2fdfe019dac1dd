"""Grad-CAM's candidate layers on a model without a default one (a detector's raw head).

A small detector (strided backbone with a squeeze-excitation block, a lateral conv and
an upsampling into the stride-4 map, a 1x1 head flattened into per-cell predictions),
exported with dynamic height and width. Which tensor is which module's output is found
from the values (forward hooks against onnxruntime), not from the exporter's names; each
candidate's Grad-CAM is then checked against pytorch-grad-cam 1.5.7 hooking that module.
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnxplain.graph_rewrite import build_explain_model, candidate_layers, default_layer
from onnxplain.graph_rewrite.errors import RewriteError
from torch import nn
from torch.nn import functional

from helpers.fd import session
from helpers.modern_archs import INPUT, Arch, Model
from helpers.pytorch_grad_cam_import import pytorch_grad_cam

SIDE = 32


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class TinyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())  # stride 2
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())  # stride 4
        self.se = SqueezeExcite(16)
        self.stage3 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())  # stride 8
        self.lateral = nn.Conv2d(32, 16, 1)
        self.head = nn.Conv2d(16, 6, 1)  # 4 box terms, objectness, one class per cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2 = self.se(self.stage2(self.stem(x)))
        up = functional.interpolate(self.lateral(self.stage3(c2)), scale_factor=2.0)
        return self.head(c2 + up).flatten(2).transpose(1, 2)  # [N, cells, 6]


# The modules whose outputs the candidates are, input side first; the head's map flagged.
EXPECTED = [("stem", False), ("se", False), ("lateral", False), ("head", True)]


def _export(net: nn.Module, image: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (image,),
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            input_names=["image"],
            output_names=["cells"],
            dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "cells": {0: "n", 1: "k"}},
            opset_version=17,
        )
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def detector() -> tuple[TinyDetector, onnx.ModelProto, torch.Tensor]:
    net = TinyDetector().eval()
    image = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    return net, _export(net, image), image


def _module_of_each(
    net: nn.Module, model: onnx.ModelProto, image: torch.Tensor, names: list[str]
) -> dict[str, str]:
    """Each tensor name -> the module (by name, among the net's children) with its value."""
    outputs: dict[str, np.ndarray] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach().numpy())
        )
        for name, module in net.named_children()
    ]
    with torch.no_grad():
        net(image)
    for hook in hooks:
        hook.remove()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    values = session(probe).run(names, {"image": image.numpy()})
    found = {}
    for name, value in zip(names, values, strict=True):
        same = [m for m, out in outputs.items() if out.shape == value.shape]
        close = [m for m in same if np.allclose(outputs[m], value, atol=1e-5)]
        found[name] = close[0] if close else f"no module ({value.shape})"
    return found


def test_the_candidates_are_the_stage_outputs_and_the_head(detector) -> None:  # type: ignore[no-untyped-def]
    net, model, image = detector
    assert default_layer(model) is None, "a detector's raw head: no default layer"
    found = candidate_layers(model)
    modules = _module_of_each(net, model, image, list(found))
    got = [(modules[name], text.endswith("(into a head)")) for name, text in found.items()]
    # Not listed: the squeeze-excitation's input (its pool's vector goes back into the
    # map), stage3's output (only a 1x1 conv at the same stride reads it).
    assert got == EXPECTED
    # Shapes with the free height and width left as "?".
    assert all(text.startswith("[?, ") and ", ?, ?]" in text for text in found.values())


def test_without_a_layer_gradcam_names_the_candidates(detector) -> None:  # type: ignore[no-untyped-def]
    _, model, _ = detector
    with pytest.raises(RewriteError, match=r"no default layer.*candidates, deepest first: ") as e:
        build_explain_model(model, "gradcam")
    message = str(e.value)
    listed = [name for name in candidate_layers(model) if repr(name) in message]
    assert len(listed) == len(EXPECTED)
    # The coarsest stage map (the lateral conv's, stride 8) first, the head's map last.
    first = min(listed, key=message.index)
    last = max(listed, key=message.index)
    modules = _module_of_each(detector[0], model, detector[2], [first, last])
    assert (modules[first], modules[last]) == ("lateral", "head")


@pytest.mark.parametrize("index", range(len(EXPECTED)), ids=[m for m, _ in EXPECTED])
def test_gradcam_at_each_candidate_matches_pytorch_grad_cam(detector, index: int) -> None:  # type: ignore[no-untyped-def]
    net, model, image = detector
    layer = list(candidate_layers(model))[index]
    module_name = EXPECTED[index][0]
    explain = build_explain_model(
        model, "gradcam", params={"layer": layer, "cam_style": "pytorch-grad-cam"}
    )
    cells = (SIDE // 4) ** 2
    seed = np.zeros((2, cells, 6), np.float32)
    seed[0, cells // 2 + 3, 4] = 1.0  # objectness of one cell
    seed[1, 5, 5] = 1.0  # the class score of another
    (got,) = session(explain).run(["saliency"], {"image": image.numpy(), "output_grad": seed})

    pgc = pytorch_grad_cam()
    targets = [_seeded(torch.from_numpy(s)) for s in seed]
    with pgc.GradCAM(model=net, target_layers=[net.get_submodule(module_name)]) as cam:
        want = np.asarray(cam(input_tensor=image, targets=targets))[:, None]
    assert got.shape == want.shape == (2, 1, SIDE, SIDE)
    assert float(np.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, atol=1e-4)


def _seeded(seed: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's target for one sample: <seed, output>."""
    return lambda output: (output * seed).sum()


def test_check_lists_the_candidates(detector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, model, _ = detector
    path = tmp_path / "detector.onnx"
    onnx.save(model, str(path))
    done = subprocess.run(
        [sys.executable, "-m", "onnxplain", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("candidate layers (each stage's last feature map, input side first):")
    listed = [line.split()[0] for line in lines[start + 1 :]]
    assert listed == list(candidate_layers(model))
    assert lines[-1].endswith("(into a head)")


def test_a_detection_transformer_lists_its_input_projection_and_no_attention() -> None:
    # transformers' DETR on its small ResNet (random weights, tests/helpers/modern_archs.py):
    # pytorch-grad-cam users weigh its input projection, the 1x1 conv from the backbone into
    # the transformer. Its attention tensors, [N, heads, tokens, d], have a map's rank; none
    # may be listed.
    model = Model(Arch("detr", 64, cam_module="net.model.input_projection"))
    exported = model.export("torchscript")
    found = candidate_layers(exported)
    want = model.module_output("net.model.input_projection")
    probe = onnx.ModelProto()
    probe.CopyFrom(exported)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in found)
    values = session(probe).run(list(found), {INPUT: model.image})
    same = [
        name
        for name, value in zip(found, values, strict=True)
        if value.shape == want.shape and np.allclose(value, want, atol=1e-5)
    ]
    assert len(same) == 1 and found[same[0]].endswith("(into a head)"), found
    producers = {t: n.op_type for n in exported.graph.node for t in n.output}
    assert not {producers[name] for name in found} & {"Softmax", "MatMul", "Where"}, found
    model.__exit__()
