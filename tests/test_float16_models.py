"""float16 models (onnxconverter-common's convert_float_to_float16), with and without float32
inputs and outputs: every registered method builds a model that passes the full ONNX check,
loads in onnxruntime, and whose map is as close to the float64 map as PyTorch's own float16
autograd gets (issue 17, item 6).

The reference is a PyTorch module with the tiny classifier's weights, its maps from torch
autograd and Captum, in float64 (the truth) and float16 (what float16 rounding costs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
)
from onnx import numpy_helper
from onnxconverter_common import float16
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.methods import ALL_METHODS
from torch import nn

from helpers.tiny import tiny_classifier

CLASS = 2
SAMPLES = 4  # SmoothGrad's copies, fed as the noise input
STEPS = 8  # Integrated Gradients' points
# Our float16 map may be this many times as far from float64 as torch float16's map, or
# FLOOR (a few float16 units of rounding, 2^-11 each) where torch happens to be closer.
FACTOR = 4.0
FLOOR = 4e-3
PARAMS: dict[str, dict[str, object]] = {
    "gradcam": {"layer": "r2"},
    "guided_gradcam": {"layer": "r2"},
    "smoothgrad": {"samples": SAMPLES},
    "integrated_gradients": {"steps": STEPS},
}


class TinyNet(nn.Module):
    """tiny_classifier's graph in PyTorch, up to the logits."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6, 5)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.from_numpy(np.array(weights["w1"])))
            self.conv1.bias.copy_(torch.from_numpy(np.array(weights["b1"])))
            self.conv2.weight.copy_(torch.from_numpy(np.array(weights["w2"])))
            self.fc.weight.copy_(torch.from_numpy(np.array(weights["fc_w"])))
            self.fc.bias.copy_(torch.from_numpy(np.array(weights["fc_b"])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r2 = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(r2.mean(dim=(2, 3)))


def _relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _grad(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x)[:, CLASS].sum(), x)
    return grad


def torch_map(
    method: str, net: nn.Module, image: np.ndarray, noise: np.ndarray, dtype: torch.dtype
) -> np.ndarray:
    """`method`'s map of logit CLASS, computed by torch/Captum in `dtype`."""
    net = net.to(dtype)
    x = torch.from_numpy(image).to(dtype)
    if method == "vanilla":
        out = _grad(net, x)
    elif method == "input_x_gradient":
        out = x * _grad(net, x)
    elif method in ("deconvnet", "guided"):
        explainer = Deconvolution(net) if method == "deconvnet" else GuidedBackprop(net)
        out = explainer.attribute(x.requires_grad_(True), target=CLASS)
    elif method == "gradcam":  # the "captum" style: unnormalised, nearest upsampling
        cam = LayerGradCam(net, net.relu2).attribute(
            x.requires_grad_(True), target=CLASS, relu_attributions=True
        )
        out = LayerAttribution.interpolate(cam, tuple(image.shape[2:]), "nearest")
    elif method == "guided_gradcam":
        out = GuidedGradCam(net, net.relu2).attribute(x.requires_grad_(True), target=CLASS)
    elif method == "smoothgrad":  # the mean gradient at x + sigma·(max - min)·noise
        flat = x.reshape(x.shape[0], -1)
        spread = (flat.amax(1) - flat.amin(1)).reshape(-1, 1, 1, 1)
        z = torch.from_numpy(noise).to(dtype)
        out = torch.stack([_grad(net, x + 0.15 * spread * z[s]) for s in range(len(z))]).mean(0)
    elif method == "integrated_gradients":
        ig = IntegratedGradients(net)
        out = ig.attribute(x, target=CLASS, n_steps=STEPS, method="gausslegendre")
    else:
        raise AssertionError(f"no reference for {method}")
    return out.detach().double().numpy()


@pytest.fixture(scope="module")
def forward() -> onnx.ModelProto:
    return tiny_classifier(batch=2)


@pytest.fixture(scope="module")
def net(forward: onnx.ModelProto) -> TinyNet:
    return TinyNet({t.name: numpy_helper.to_array(t) for t in forward.graph.initializer})


def test_every_method_has_a_reference() -> None:
    """A method registered later needs a reference in torch_map, or this fails."""
    image, noise = np.ones((1, 3, 8, 8)), np.zeros((1, 1, 3, 8, 8))
    net = TinyNet({k: np.zeros(s, np.float32) for k, s in _SHAPES.items()})
    for method in ALL_METHODS:
        assert torch_map(method, net, image, noise, torch.float64).shape[0] == 1


_SHAPES = {"w1": (4, 3, 3, 3), "b1": (4,), "w2": (6, 4, 3, 3), "fc_w": (5, 6), "fc_b": (5,)}


@pytest.mark.parametrize("keep_io_types", [True, False], ids=["float32-io", "float16-io"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_float16_model_is_valid_and_as_close_as_torch_float16(
    forward: onnx.ModelProto, net: TinyNet, method: str, keep_io_types: bool
) -> None:
    half = float16.convert_float_to_float16(forward, keep_io_types=keep_io_types)
    explain = build_explain_model(half, method, output_name="logits", params=PARAMS.get(method, {}))
    onnx.checker.check_model(explain, full_check=True)
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 3, 8, 8))
    noise = rng.standard_normal((SAMPLES, 2, 3, 8, 8))
    # Both sides start from the same float16 values, so only the arithmetic differs.
    image = image.astype(np.float16).astype(np.float64)
    noise = noise.astype(np.float16).astype(np.float64)
    io_type = np.float32 if keep_io_types else np.float16
    seed = np.zeros((2, 5), np.float16)
    seed[:, CLASS] = 1
    feeds = {"image": image.astype(io_type), "output_grad": seed}
    if method == "smoothgrad":
        feeds["smoothgrad_noise"] = noise.astype(io_type)
    wanted = {i.name for i in session.get_inputs()}
    assert wanted == set(feeds), wanted
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = outputs["saliency"]
    assert got.dtype == io_type  # computed in the type it is declared with

    exact = torch_map(method, net, image, noise, torch.float64)
    half_torch = torch_map(method, net, image, noise, torch.float16)
    ours, theirs = _relative_l2(got.astype(np.float64), exact), _relative_l2(half_torch, exact)
    assert ours <= max(FACTOR * theirs, FLOOR), (ours, theirs)


@pytest.mark.parametrize("keep_io_types", [True, False], ids=["float32-io", "float16-io"])
def test_pytorch_grad_cam_style_builds_on_float16(
    forward: onnx.ModelProto, keep_io_types: bool
) -> None:
    """The min-max normalisation's epsilon takes the map's type, not float32's."""
    half = float16.convert_float_to_float16(forward, keep_io_types=keep_io_types)
    params = {"layer": "r2", "cam_style": "pytorch-grad-cam"}
    explain = build_explain_model(half, "gradcam", output_name="logits", params=params)
    onnx.checker.check_model(explain, full_check=True)
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])
    io_type = np.float32 if keep_io_types else np.float16
    image = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(io_type)
    seed = np.eye(5, dtype=np.float16)[[CLASS, CLASS]]
    (got,) = session.run(["saliency"], {"image": image, "output_grad": seed})
    assert got.dtype == io_type and got.shape == (2, 1, 8, 8)
    assert np.all(np.isfinite(got)) and 0.99 <= got.max() <= 1.0  # min-max: peak at 1


class TinyAttention(nn.Module):
    """Patches → one scaled_dot_product_attention → mean token → logits: TorchScript exports
    its 1/sqrt(head size) as Shape → Cast to float → Sqrt → Div, as timm's ViTs have it."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # [batch, 4, 8]
        heads = tokens.reshape(x.shape[0], -1, 2, 4).transpose(1, 2)  # [batch, 2, 4, 4]
        mixed = nn.functional.scaled_dot_product_attention(heads, heads, heads)
        return self.head(mixed.transpose(1, 2).flatten(2).mean(1))


def test_float16_attention_whose_scale_the_converter_left_float32(tmp_path: Path) -> None:
    """onnxconverter-common declares the Cast of the head size float16 but leaves its `to`
    float32 (onnxruntime refuses the converted model itself); the explain model computes the
    scale in float16, as declared, and its map is float64 autograd's to float16 rounding."""
    torch.manual_seed(0)
    net = TinyAttention().eval().half().float()  # weights that float16 holds exactly
    path = tmp_path / "attention.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, 8, 8),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    half = float16.convert_float_to_float16(onnx.load(path), keep_io_types=True)
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    assert any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for n in casts for a in n.attribute)
    explain = build_explain_model(half, "vanilla", output_name="logits")
    onnx.checker.check_model(explain, full_check=True)
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float16)
    seed = np.zeros((2, 5), np.float32)
    seed[:, CLASS] = 1
    (got,) = session.run(["saliency"], {"image": image.astype(np.float32), "output_grad": seed})
    exact = _grad(net.double(), torch.from_numpy(image.astype(np.float64))).numpy()
    error = _relative_l2(got.astype(np.float64), exact)
    assert error < 3e-3, error  # float16 rounding: 2.9e-4 measured
