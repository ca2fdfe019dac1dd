"""Modern image architectures for tests/test_modern_archs.py: timm models and a transformers
SegFormer and DETR with random seeded weights, their two ONNX exports, and oracles computed on the
original PyTorch module.

- `create`: the timm model (no download), BatchNorm statistics randomised so that eval mode
  is no identity, in-place activations turned off (Captum's hooks refuse them), a batch
  of two images at a small size the architecture accepts, and what each explains (`seed_of`);
- `export`: `torch.onnx.export` with `dynamo=False` (TorchScript) or the default dynamo
  exporter, the batch axis dynamic in both;
- `torch_maps`: vanilla (torch.autograd) and guided (Captum's GuidedBackprop) maps of the
  same module in float64 (the reference) and float32 (the control: what float32 rounding
  alone does on this model and input);
- `layer_module`: the torch module whose output is a given tensor of the ONNX model, found
  by value (hooks on every module, one forward pass), for pytorch-grad-cam's target layer.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from helpers.nets import randomise_batchnorm
from helpers.timm_import import timm

INPUT, OUTPUT = "image", "logits"
EXPORTERS = ("torchscript", "dynamo")
SAMPLES, STEPS = 2, 4  # SmoothGrad's noisy copies, Integrated Gradients' points: kept small
SIGMA = 0.15  # SmoothGrad's default noise, times each sample's value range
# The methods torch_map computes on the original module.
TORCH_METHODS = ("vanilla", "guided", "smoothgrad", "integrated_gradients")


@dataclass(frozen=True)
class Arch:
    """An architecture at a test size: a timm model name (`kwargs` go to
    timm.create_model), or "segformer" (transformers, a small random config)."""

    name: str
    size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    # The module whose output Grad-CAM weighs where the model has no default layer (a
    # segmenter: nothing pools): pytorch-grad-cam's segmentation recipe names one too.
    cam_module: str | None = None


class _Logits(nn.Module):
    """A transformers model's `logits` alone, so that the export has one output."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits


@contextlib.contextmanager
def _torchvision_stub_hidden() -> Iterator[None]:
    """The tests' torchvision stub out of sys.modules for a while: transformers asks
    importlib.util.find_spec("torchvision") at import time, which raises on a module
    without a spec. Without the stub it finds none, and caches that (lru_cache)."""
    stubs = {
        name: sys.modules.pop(name)
        for name in list(sys.modules)
        if name == "torchvision" or name.startswith("torchvision.")
    }
    try:
        yield
    finally:
        sys.modules.update(stubs)


def _segformer() -> nn.Module:
    # Two encoder stages of one block each, narrow: SegFormer's ops (overlapping patch
    # embeddings, efficient attention with spatial reduction, Mix-FFN's depthwise conv,
    # the all-MLP decoder's upsampling and fusion) at a fraction of B0's size.
    with _torchvision_stub_hidden():
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
        from transformers.utils import import_utils

        assert not import_utils.is_torchvision_available()  # cached from now on

    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        num_labels=5,
    )
    return _Logits(SegformerForSemanticSegmentation(config))


def _detr() -> nn.Module:
    # DETR with transformers' own small ResNet as its backbone (random weights: timm's
    # backbone route needs torchvision in transformers' eyes, and no download either way),
    # one encoder and one decoder layer, five queries.
    with _torchvision_stub_hidden():
        from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    backbone = ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        layer_type="basic",
        out_features=["stage2"],
    )
    config = DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=5,
        num_labels=3,
    )
    return _Logits(DetrForObjectDetection(config))


def _build(arch: Arch) -> nn.Module:
    if arch.name == "segformer":
        return _segformer()
    if arch.name == "detr":
        return _detr()
    return timm().create_model(arch.name, pretrained=False, **arch.kwargs)


def seed_of(logits: np.ndarray) -> np.ndarray:
    """What each sample explains: a classifier's top class; a detector's best detection
    score (query and class, the no-object class left out, logits [N, queries, classes+1]);
    a segmenter's class with the largest predicted region, over that region (its mask, as
    pytorch-grad-cam's SemanticSegmentationTarget explains). The top one, because
    Grad-CAM's map of a class whose logit falls below its bias is all zero after the ReLU
    (a random net's fixed class often does), which would leave nothing to compare."""
    seed = np.zeros_like(logits, dtype=np.float32)
    for i, row in enumerate(logits):
        if row.ndim == 1:
            seed[i, int(row.argmax())] = 1
        elif row.ndim == 2:
            query, label = np.unravel_index(int(row[:, :-1].argmax()), row[:, :-1].shape)
            seed[i, query, label] = 1
        else:
            labels = row.argmax(0)
            top = int(np.bincount(labels.ravel()).argmax())
            seed[i, top] = labels == top
    return seed


def _gradients(net: nn.Module, image: torch.Tensor, seed: torch.Tensor) -> np.ndarray:
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((net(x) * seed).sum(), x)
    return grad.double().numpy()


class Seeded(nn.Module):
    """<seed, net(x)> per sample, shaped [N, 1]: what the explain model explains, and
    Captum's `target=0` then explains it (a class logit, or a class's mask region)."""

    def __init__(self, net: nn.Module, seed: torch.Tensor) -> None:
        super().__init__()
        self.net, self.seed = net, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        seed = self.seed
        if y.shape[0] != seed.shape[0]:
            # Captum's IntegratedGradients runs every step at once, step-major: the batch
            # repeated once per step.
            seed = seed.repeat(y.shape[0] // seed.shape[0], *[1] * (seed.ndim - 1))
        return (y * seed).flatten(1).sum(1, keepdim=True)


def _guided(net: nn.Module, image: torch.Tensor, seed: torch.Tensor) -> np.ndarray:
    from captum.attr import GuidedBackprop

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
        attr = GuidedBackprop(Seeded(net, seed)).attribute(image.clone(), target=0)
    return attr.detach().double().numpy()


def _smoothgrad(
    net: nn.Module, image: torch.Tensor, seed: torch.Tensor, noise: torch.Tensor
) -> np.ndarray:
    """The mean gradient at image + SIGMA x (max - min) x noise, per sample (Smilkov et
    al.'s definition, the noise the explain model is fed)."""
    flat = image.reshape(image.shape[0], -1)
    spread = (flat.amax(1) - flat.amin(1)).reshape(-1, *[1] * (image.ndim - 1))
    grads = [_gradients(net, image + SIGMA * spread * z, seed) for z in noise]
    return np.mean(grads, axis=0)


def _integrated_gradients(net: nn.Module, image: torch.Tensor, seed: torch.Tensor) -> np.ndarray:
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(Seeded(net, seed)).attribute(
        image.clone(), target=0, n_steps=STEPS, method="gausslegendre"
    )
    return attr.detach().double().numpy()


class Model:
    """One architecture's module, input and seed; a context manager that frees the module."""

    def __init__(self, arch: Arch) -> None:
        self.arch = arch
        torch.manual_seed(0)
        net = _build(arch)
        randomise_batchnorm(net, torch.Generator().manual_seed(1))
        for module in net.modules():
            if getattr(module, "inplace", False) is True:
                module.inplace = False  # the same maths; Captum's hooks refuse in-place ops
        self.net: nn.Module = net.eval()
        rng = np.random.default_rng(2)
        self.image = rng.standard_normal((2, 3, arch.size, arch.size)).astype(np.float32)
        with torch.no_grad():
            self.seed = seed_of(self.net(torch.from_numpy(self.image)).numpy())
        self.noise = rng.standard_normal((SAMPLES, *self.image.shape)).astype(np.float32)
        self._maps: dict[str, np.ndarray] = {}

    def spread(self, method: str, moves: int = 3, size: float = 1e-5) -> float:
        """The largest relative L2 of `method`'s float64 map at inputs moved by `size`
        (relative RMS) from the map at the input: a kink or tie within float32 rounding of
        the input, which one float32 code flips and another does not, shows up here
        (as in tests/helpers/oracle.py)."""
        key = f"{method}-spread"
        if key not in self._maps:
            exact = self.torch_map(method, torch.float64)
            rng = np.random.default_rng(4)
            scale = size * float(np.sqrt(np.mean(self.image.astype(np.float64) ** 2)))
            worst = 0.0
            with self._typed(torch.float64) as net:
                for _ in range(moves):
                    moved = self.image + scale * rng.standard_normal(self.image.shape)
                    worst = max(worst, relative_l2(self._compute(method, net, moved), exact))
            self._maps[key] = np.array(worst)
        return float(self._maps[key])

    def torch_map(self, method: str, dtype: torch.dtype) -> np.ndarray:
        """One of TORCH_METHODS on the original module in `dtype`, cached: vanilla,
        Captum's GuidedBackprop, SmoothGrad on the fed noise, Captum's
        IntegratedGradients (zero baseline, Gauss-Legendre, as the explain model)."""
        key = f"{method}-{dtype}"
        if key not in self._maps:
            with self._typed(dtype) as net:
                self._maps[key] = self._compute(method, net, self.image)
        return self._maps[key]

    def _compute(self, method: str, net: nn.Module, image_array: np.ndarray) -> np.ndarray:
        dtype = next(net.parameters()).dtype
        image = torch.from_numpy(image_array).to(dtype)
        seed = torch.from_numpy(self.seed).to(dtype)
        if method == "vanilla":
            return _gradients(net, image, seed)
        if method == "guided":
            return _guided(net, image, seed)
        if method == "smoothgrad":
            return _smoothgrad(net, image, seed, torch.from_numpy(self.noise).to(dtype))
        return _integrated_gradients(net, image, seed)

    @contextlib.contextmanager
    def _typed(self, dtype: torch.dtype) -> Iterator[nn.Module]:
        if dtype == torch.float32:
            yield self.net
            return
        double = copy.deepcopy(self.net).to(dtype)
        try:
            yield double
        finally:
            double.to_empty(device="meta")  # its weights go now, not at garbage collection

    def export(self, exporter: str) -> onnx.ModelProto:
        """The module as ONNX from `exporter`, input `image` with a dynamic batch."""
        x = torch.from_numpy(self.image)
        buffer = io.BytesIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")  # TorchScript's deprecation, tracer warnings
            if exporter == "torchscript":
                torch.onnx.export(
                    self.net,
                    (x,),
                    buffer,  # type: ignore[arg-type]
                    dynamo=False,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                    opset_version=17,
                )
                return onnx.load_from_string(buffer.getvalue())
            program = torch.onnx.export(
                self.net,
                (x,),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}},
            )
            assert program is not None
            return program.model_proto

    def layer_module(self, value: np.ndarray) -> tuple[nn.Module, str]:
        """The module (and its name) whose forward output is `value`, the first in forward
        order; `value` is the ONNX model's tensor at the same input."""
        outputs: list[tuple[str, torch.Tensor]] = []
        names = {m: n for n, m in self.net.named_modules()}

        def hook(module: nn.Module, _: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                outputs.append((names[module], out.detach()))

        handles = [m.register_forward_hook(hook) for m in self.net.modules()]
        try:
            with torch.no_grad():
                self.net(torch.from_numpy(self.image))
        finally:
            for h in handles:
                h.remove()
        scale = float(np.abs(value).max())
        for name, out in outputs:
            same = tuple(out.shape) == value.shape
            if same and float(np.abs(out.numpy() - value).max()) <= 1e-4 * scale:
                return self.net.get_submodule(name), name
        shapes = sorted({tuple(o.shape) for _, o in outputs})
        raise AssertionError(f"no module outputs the layer {value.shape}; shapes: {shapes}")

    def module_output(self, name: str) -> np.ndarray:
        """The output of the submodule `name` at the input."""
        seen: list[torch.Tensor] = []
        handle = self.net.get_submodule(name).register_forward_hook(
            lambda _m, _i, out: seen.append(out.detach())
        )
        try:
            with torch.no_grad():
                self.net(torch.from_numpy(self.image))
        finally:
            handle.remove()
        return seen[-1].numpy()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *_: object) -> None:
        self._maps.clear()
        self.net.to_empty(device="meta")


def relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))
