"""Grad-CAM at a transformer's token layer [N, tokens, C], read as a grid.

The oracle is pytorch-grad-cam 1.5.7's GradCAM with the `reshape_transform` its docs give
for ViT (drop the class token, reshape to the patch grid, channels first), on a small
seeded ViT whose target layer is the last block's norm1, as those docs advise (the final
LayerNorm before a class-token head passes no gradient to the patch tokens: an all-zero map).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnxplain.graph_rewrite import build_explain_model, default_layer
from onnxplain.graph_rewrite.errors import RewriteError
from onnxplain.graph_rewrite.methods.token_grid import token_grid
from test_transformer_and_mobile import CLASSES, TinyViT
from torch import nn

from helpers.fd import session
from helpers.nets import export_onnx
from helpers.pytorch_grad_cam_import import pytorch_grad_cam

TARGETS = [2, 5]
SIDE, PATCH = 16, 4


class ViTWithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = TinyViT(side=SIDE, patch=PATCH)
        self.body.head = nn.Identity()  # type: ignore[assignment]
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, CLASSES)
        self.tokens: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = self.body
        t = body.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([body.cls.expand(t.shape[0], -1, -1), t], dim=1) + body.pos
        n, length, dim = t.shape
        q, k, v = (
            body.qkv(body.norm1(t))
            .reshape(n, length, 3, body.heads, body.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        attention = torch.softmax(q @ k.transpose(-1, -2) / body.head_dim**0.5, dim=-1)
        t = t + body.proj((attention @ v).transpose(1, 2).reshape(n, length, dim))
        t = t + body.mlp(body.norm2(t))
        return self.head(self.norm(t)[:, 0])


def _reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
    side = SIDE // PATCH
    grid = tensor[:, 1:, :].reshape(tensor.size(0), side, side, tensor.size(2))
    return grid.permute(0, 3, 1, 2)


def _norm1_output(model: onnx.ModelProto) -> str:
    # The block's LayerNorms in graph order: norm1, norm2, then the final norm.
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert len(norms) == 3, "the export should keep LayerNormalization (opset >= 17)"
    return norms[0].output[0]


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("named", [True, False], ids=["named-layer", "default-layer"])
def test_token_layer_gradcam_matches_pytorch_grad_cam(image: torch.Tensor, named: bool) -> None:
    net = ViTWithNorm().eval()
    model = export_onnx(net, image)
    layer = _norm1_output(model)
    assert default_layer(model) == layer, "the default on a ViT: the last block's norm1"
    params = {"layer": layer, "cam_style": "pytorch-grad-cam"} if named else {}
    params["cam_style"] = "pytorch-grad-cam"
    explain = build_explain_model(model, "gradcam", params=params)
    one_hot = np.eye(CLASSES, dtype=np.float32)[TARGETS]
    got = session(explain).run(["saliency"], {"image": image.numpy(), "output_grad": one_hot})[0]

    pgc = pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with pgc.GradCAM(
        model=net, target_layers=[net.body.norm1], reshape_transform=_reshape_transform
    ) as cam:
        want = np.asarray(
            cam(input_tensor=image, targets=[ClassifierOutputTarget(c) for c in TARGETS])
        )[:, None]
    assert got.shape == want.shape == (2, 1, SIDE, SIDE)
    assert float(np.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize(
    ("tokens", "hw", "expected"),
    [
        (197, (224, 224), (1, 14, 14)),  # ViT: class token
        (198, (224, 224), (2, 14, 14)),  # DeiT distilled: class + distillation tokens
        (196, (224, 224), (0, 14, 14)),  # no class token (e.g. global-pooled ViT)
        (129, (128, 256), (1, 8, 16)),  # a non-square input
    ],
)
def test_token_grid_inference(
    tokens: int, hw: tuple[int, int], expected: tuple[int, int, int]
) -> None:
    assert token_grid(tokens, hw) == expected


def test_token_count_without_a_grid_is_refused() -> None:
    # 205 - k is no square for k <= 8 (196 would need 9 dropped tokens).
    with pytest.raises(RewriteError, match="does not form a grid"):
        token_grid(205, (224, 224))


class ChannelsLastStage(nn.Module):
    """A Swin-like stage: a patch embedding, then blocks that work on [N, H, W, C]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.embed = nn.Conv2d(3, 24, PATCH, stride=PATCH)
        self.norm = nn.LayerNorm(24)
        self.mlp = nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 24))
        self.stage = nn.Identity()  # its output, [N, H, W, C], is the Grad-CAM layer
        self.head = nn.Linear(24, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).permute(0, 2, 3, 1)
        t = self.stage(t + self.mlp(self.norm(t)))
        return self.head(t.mean(dim=(1, 2)))


def test_channels_last_layer_gradcam_matches_pytorch_grad_cam(image: torch.Tensor) -> None:
    net = ChannelsLastStage().eval()
    model = export_onnx(net, image)
    # The stage's output: the last Add before the spatial mean.
    (layer,) = [n.output[0] for n in model.graph.node if n.op_type == "Add"][-1:]
    explain = build_explain_model(
        model, "gradcam", params={"layer": layer, "cam_style": "pytorch-grad-cam"}
    )
    one_hot = np.eye(CLASSES, dtype=np.float32)[TARGETS]
    got = session(explain).run(["saliency"], {"image": image.numpy(), "output_grad": one_hot})[0]

    pgc = pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with pgc.GradCAM(
        model=net,
        target_layers=[net.stage],
        reshape_transform=lambda t: t.permute(0, 3, 1, 2),  # pytorch-grad-cam's Swin recipe
    ) as cam:
        want = np.asarray(
            cam(input_tensor=image, targets=[ClassifierOutputTarget(c) for c in TARGETS])
        )[:, None]
    assert float(np.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize(
    ("dims", "hw", "channels_last"),
    [
        ((7, 7, 768), (224, 224), True),  # a Swin stage
        ((768, 7, 7), (224, 224), False),  # a CNN stage
        ((64, 56, 56), (224, 224), False),
        ((10, 16, 512), (300, 500), True),  # rounded strides, channels last
        ((512, 10, 16), (300, 500), False),
        ((7, 7, 7), (224, 224), False),  # reads both ways: channels first, as before
    ],
)
def test_channels_last_is_read_from_the_shape(
    dims: tuple[int, int, int], hw: tuple[int, int], channels_last: bool
) -> None:
    from onnx import TensorProto, helper
    from onnxplain.graph_rewrite.builder import Builder
    from onnxplain.graph_rewrite.methods.token_grid import is_channels_last
    from onnxplain.graph_rewrite.model_info import ModelInfo

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["unused"])],
        "shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *hw])],
        [helper.make_tensor_value_info("layer", TensorProto.FLOAT, ["N", *dims])],
    )
    g = Builder(ModelInfo(helper.make_model(graph)))
    assert is_channels_last(g, "layer", "x") is channels_last
