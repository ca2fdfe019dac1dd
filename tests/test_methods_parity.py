"""Grad-CAM, Guided Grad-CAM and input × gradient against Captum and pytorch-grad-cam.

Same weights, a batch of two samples asking for different classes, and the issue's bound:
max |ours - theirs| <= 1e-4 · max |theirs|. The references are Captum 0.9's LayerGradCam
(relu_attributions=True) with LayerAttribution.interpolate (nearest), GuidedGradCam and
InputXGradient; pytorch-grad-cam 1.5.7's GradCAM (min-max, cv2 bilinear resize) and its
Guided Grad-CAM, `cam * gb` with its GuidedBackpropReLUModel.

Layers: the default one (VGG-style: the last MaxPool before Flatten, pytorch-grad-cam's
`features[-1]`; ResNet-style: the last ReLU before the global pool) and an earlier one
named by the user, whose map is upsampled by another factor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from captum.attr import GuidedGradCam, InputXGradient, LayerAttribution, LayerGradCam
from onnxplain.graph_rewrite import build_explain_model, default_layer
from torch import nn

from helpers.fd import session
from helpers.nets import ResNetStyle, VGGStyle, export_onnx, randomise_batchnorm
from helpers.pytorch_grad_cam_import import pytorch_grad_cam

TARGETS = [3, 7]
CLASSES = 10
SIDE = 32
RELATIVE_BOUND = 1e-4


@dataclass
class Case:
    net: nn.Module
    model: onnx.ModelProto
    image: np.ndarray  # float32, [2, 3, SIDE, SIDE]
    # name -> (the torch module whose output is the layer, the ONNX tensor name or None
    # for the default layer)
    layers: dict[str, tuple[nn.Module, str | None]]

    @property
    def one_hot(self) -> np.ndarray:
        return np.eye(CLASSES, dtype=np.float32)[TARGETS]


def relu_outputs(model: onnx.ModelProto) -> list[str]:
    return [n.output[0] for n in model.graph.node if n.op_type == "Relu"]


def vgg_case(net: VGGStyle, model: onnx.ModelProto) -> dict[str, tuple[nn.Module, str | None]]:
    # net[3] is the first conv of the second block (16 channels at 16x16): its ReLU is the
    # third Relu of the export.
    return {"default": (net[5], None), "earlier": (net[3], relu_outputs(model)[2])}


def resnet_case(
    net: ResNetStyle, model: onnx.ModelProto
) -> dict[str, tuple[nn.Module, str | None]]:
    # stage1's output (16 channels at 16x16) is the ReLU after its residual add.
    return {"default": (net.head_relu, None), "earlier": (net.stage1, relu_outputs(model)[2])}


NETS: dict[
    str, tuple[Callable[[], nn.Module], Callable[..., dict[str, tuple[nn.Module, str | None]]]]
] = {
    "vgg_style": (lambda: VGGStyle(CLASSES, SIDE), vgg_case),
    "resnet_style": (lambda: ResNetStyle(CLASSES), resnet_case),
}
# Random nets often give a class a Grad-CAM that is 0 everywhere (the weighted sum is
# negative before the ReLU): these seeds give both samples a map at both layers.
SEEDS = {"vgg_style": 7, "resnet_style": 10}


@pytest.fixture(scope="module", params=sorted(NETS))
def case(request: pytest.FixtureRequest) -> Case:
    make, layers = NETS[request.param]
    generator = torch.Generator().manual_seed(SEEDS[request.param])
    torch.manual_seed(SEEDS[request.param])
    net = make()
    randomise_batchnorm(net, generator)
    net.eval()
    image = torch.randn(2, 3, SIDE, SIDE, generator=generator)
    model = export_onnx(net, image)
    return Case(net, model, image.numpy(), layers(net, model))


def ours(case: Case, method: str, layer: str = "default", **params: object) -> np.ndarray:
    name = case.layers[layer][1]
    if name is not None:
        params["layer"] = name
    explain = build_explain_model(case.model, method, rectifiers="relu", params=params)
    return session(explain).run(["saliency"], {"image": case.image, "output_grad": case.one_hot})[0]


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} against {want.shape}"
    # Both samples must carry signal, or a wrong batch handling could hide.
    assert all(np.abs(want[i]).max() > 0 for i in range(len(want))), f"{what}: a sample is 0"
    err = np.abs(got - want).max()
    peak = np.abs(want).max()
    assert err <= RELATIVE_BOUND * peak, (
        f"{what}: max |ours - theirs| = {err:.3g}, max = {peak:.3g}"
    )


def image_tensor(case: Case) -> torch.Tensor:
    return torch.from_numpy(case.image.copy()).requires_grad_(True)


# ---------------------------------------------------------------- Captum


@pytest.mark.parametrize("layer", ["default", "earlier"])
def test_gradcam_matches_captum_layer_gradcam(case: Case, layer: str) -> None:
    module = case.layers[layer][0]
    cam = LayerGradCam(case.net, module).attribute(
        image_tensor(case), target=TARGETS, relu_attributions=True
    )
    want = LayerAttribution.interpolate(cam, (SIDE, SIDE), interpolate_mode="nearest")
    assert_close(ours(case, "gradcam", layer), want.detach().numpy(), f"gradcam at {layer}")


@pytest.mark.parametrize("layer", ["default", "earlier"])
def test_guided_gradcam_matches_captum(case: Case, layer: str) -> None:
    module = case.layers[layer][0]
    want = GuidedGradCam(case.net, module).attribute(image_tensor(case), target=TARGETS)
    assert_close(ours(case, "guided_gradcam", layer), want.detach().numpy(), "guided_gradcam")


def test_input_x_gradient_matches_captum(case: Case) -> None:
    want = InputXGradient(case.net).attribute(image_tensor(case), target=TARGETS)
    assert_close(ours(case, "input_x_gradient"), want.detach().numpy(), "input_x_gradient")


# ---------------------------------------------------------------- pytorch-grad-cam


def pgc_gradcam(case: Case, layer: str) -> np.ndarray:
    pgc = pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = case.layers[layer][0]
    with pgc.GradCAM(model=case.net, target_layers=[module]) as cam:
        maps = cam(
            input_tensor=torch.from_numpy(case.image.copy()),
            targets=[ClassifierOutputTarget(c) for c in TARGETS],
        )
    return np.asarray(maps)[:, None]  # [N, H, W] -> [N, 1, H, W]


@pytest.mark.parametrize("layer", ["default", "earlier"])
def test_gradcam_matches_pytorch_grad_cam(case: Case, layer: str) -> None:
    got = ours(case, "gradcam", layer, cam_style="pytorch-grad-cam")
    assert_close(got, pgc_gradcam(case, layer), f"pytorch-grad-cam style at {layer}")


@pytest.mark.parametrize("layer", ["default", "earlier"])
def test_guided_gradcam_matches_pytorch_grad_cam(case: Case, layer: str) -> None:
    pgc = pytorch_grad_cam()
    cams = pgc_gradcam(case, layer)
    # Their guided backprop explains one image at a time ([H, W, C]) and swaps the net's
    # ReLU modules while it runs: a copy of the net keeps ours intact.
    guided = pgc.GuidedBackpropReLUModel(model=copy.deepcopy(case.net), device="cpu")
    want = np.stack(
        [
            cams[i, 0][:, :, None] * guided(torch.from_numpy(case.image[i : i + 1].copy()), c)
            for i, c in enumerate(TARGETS)
        ]
    ).transpose(0, 3, 1, 2)
    got = ours(case, "guided_gradcam", layer, cam_style="pytorch-grad-cam")
    assert_close(got, want, f"pytorch-grad-cam guided at {layer}")


# ---------------------------------------------------------------- the layer and its ranks


def test_default_layer_is_the_input_of_the_global_pool_or_flatten(case: Case) -> None:
    layer = default_layer(case.model)
    consumers = [n.op_type for n in case.model.graph.node if layer in n.input]
    assert consumers in (["Flatten"], ["GlobalAveragePool"]), (layer, consumers)


class Net1d(nn.Module):
    """Conv1d features (3-D layer), a global pool and a Linear."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims]
        pool = {1: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool3d}[dims]
        self.features = nn.Sequential(
            conv(2, 6, 3, 2, 1), nn.ReLU(), conv(6, 8, 3, 2, 1), nn.ReLU()
        )
        self.pool = pool(1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.mark.parametrize("shape", [(2, 2, 40), (2, 2, 12, 8, 8)], ids=["3-D", "5-D"])
def test_gradcam_on_3d_and_5d_layers_matches_captum(shape: tuple[int, ...]) -> None:
    torch.manual_seed(7)
    net = Net1d(len(shape) - 2).eval()
    image = torch.randn(*shape)
    model = export_onnx(net, image)
    one_hot = np.eye(CLASSES, dtype=np.float32)[TARGETS]
    explain = build_explain_model(model, "gradcam")
    got = session(explain).run(["saliency"], {"image": image.numpy(), "output_grad": one_hot})[0]
    cam = LayerGradCam(net, net.features[3]).attribute(
        image.clone().requires_grad_(True), target=TARGETS, relu_attributions=True
    )
    want = LayerAttribution.interpolate(cam, tuple(shape[2:]), interpolate_mode="nearest")
    assert_close(got, want.detach().numpy(), f"{len(shape)}-D gradcam")
