"""Modern image architectures (issue 17, item 7): timm models, a transformers SegFormer and
a DETR, random seeded weights, each exported by TorchScript (`dynamo=False`) and by the
default dynamo exporter with a dynamic batch, explained for a batch of two samples (each its
top class; SegFormer: that class's predicted region; DETR: its best detection score).

Against oracles on the original PyTorch module, not on the ONNX model:
- vanilla: float64 torch.autograd;
- guided (rectifiers="relu", as Captum hooks nn.ReLU alone): Captum's GuidedBackprop in
  float64;
- Grad-CAM at its default layer: pytorch-grad-cam 1.5.7's GradCAM (cam_style
  "pytorch-grad-cam"), its target layer the module whose output is that tensor (found by
  value), with the reshape_transform its docs give for token (ViT) and channels-last
  (Swin) layers; SegFormer and DETR have no default layer (nothing pools): a named module's
  output, found in the ONNX model by value;
- every registered method on OpenVINO against onnxruntime CPU, SmoothGrad and Integrated
  Gradients against float64 torch (Captum's IntegratedGradients) too.
Each relative L2 bound is max(FACTOR x what float32 rounding does to the map on this model
and input, a floor), as in tests/helpers/subject.py: the float32 torch control's distance
from float64, and where that does not cover the error, the float64 map's spread under
input moves of 1e-5.

The default run takes one model per family; ONNXPLAIN_MODERN=all adds the rest
(tests/README.md). A case that fails today is xfail(strict=True) with its reason: when a
fix lands it turns red, and the mark is removed.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnxplain.graph_rewrite import ALL_METHODS, build_explain_model, default_layer
from onnxplain.graph_rewrite.recipe import with_output

from helpers import runtimes
from helpers.modern_archs import (
    EXPORTERS,
    INPUT,
    SAMPLES,
    STEPS,
    TORCH_METHODS,
    Arch,
    Model,
    relative_l2,
)
from helpers.pytorch_grad_cam_import import pytorch_grad_cam

FACTOR = 4.0
# Where the float32 control happens to sit closer than this (1e-7 to 1e-6 on these nets),
# the floor: a few float32 units over a deep net; a wrong rule is off by O(1).
FLOOR = 1e-5
# Across runtimes: OpenVINO and onnxruntime pick other float32 kernels (and orders of
# summation) for the same graph, the forward passes alone differ by up to ~1e-5.
RUNTIME_FLOOR = 1e-4
# pytorch-grad-cam's map is min-max normalised to [0, 1]: an absolute bound.
CAM_ATOL = 1e-3
PARAMS: dict[str, dict[str, Any]] = {
    "smoothgrad": {"samples": SAMPLES},
    "integrated_gradients": {"steps": STEPS},
}

FAST = [
    Arch("resnet50", 64),
    Arch("mobilenetv3_large_100", 64),
    Arch("convnext_tiny", 64),
    Arch("vit_small_patch16_224", 64, {"img_size": 64}),
    Arch("swin_tiny_patch4_window7_224", 64, {"img_size": 64, "window_size": 2}),
    Arch("cspdarknet53", 64),
    # transformers' SegFormer, one class's mask region explained; Grad-CAM at the decode
    # head's fused features (after its ReLU), as no layer pools
    Arch("segformer", 64, cam_module="net.decode_head.activation"),
    # transformers' DETR on its own small ResNet, one detection score explained; Grad-CAM
    # at the input projection of the backbone's features
    Arch("detr", 64, cam_module="net.model.input_projection"),
]
MORE = [
    Arch("efficientnet_b0", 64),
    Arch("maxvit_tiny_tf_224", 64, {"img_size": 64}),
    Arch("poolformer_s12", 64),
    Arch("inception_v3", 96),  # its stem needs 75 px at least
]
ALL = os.environ.get("ONNXPLAIN_MODERN") == "all"
ARCHS = FAST + (MORE if ALL else [])
# Every method across runtimes costs an explain model and two sessions per method (about
# half the module's time when run on every case): the default run checks the dynamo
# (default) export of one CNN, one transformer and the segmenter.
RUNTIME_CASES = {
    ("resnet50", "dynamo"),
    ("vit_small_patch16_224", "dynamo"),
    ("segformer", "dynamo"),
}

# (model, exporter, check) -> why it fails today; check is "vanilla", "guided", "gradcam"
# or "runtimes:<method>".
KNOWN_FAILURES: dict[tuple[str, str, str], str] = {}


class _Current:
    """The one architecture alive: a new one frees the previous one first."""

    model: Model | None = None

    @classmethod
    def get(cls, arch: Arch) -> Model:
        if cls.model is None or cls.model.arch != arch:
            cls.free()
            cls.model = Model(arch)
        return cls.model

    @classmethod
    def free(cls) -> None:
        if cls.model is not None:
            cls.model.__exit__()
            cls.model = None
        gc.collect()


class Case:
    def __init__(self, model: Model, exporter: str, onnx_model: onnx.ModelProto) -> None:
        self.model, self.exporter, self.onnx = model, exporter, onnx_model
        self.name = f"{model.arch.name}-{exporter}"
        module = model.arch.cam_module
        # Grad-CAM's layer: the default, or the tensor the named module outputs.
        self.layer = default_layer(onnx_model) if module is None else self._tensor_of(module)
        self.cam_params = {} if module is None else {"layer": self.layer}

    def _tensor_of(self, module: str) -> str:
        """The ONNX tensor equal to `module`'s output (every node output probed at once:
        only for small models)."""
        want = self.model.module_output(module)
        names = [o for n in self.onnx.graph.node for o in n.output if o]
        probe = onnx.ModelProto()
        probe.CopyFrom(self.onnx)
        for name in names:
            with_output(probe, name)
        run = runtimes.load(runtimes.REFERENCE, probe)
        values = run({INPUT: self.model.image}, names)
        del run
        probe.Clear()
        scale = float(np.abs(want).max())
        for name, value in zip(names, values):
            if value.shape == want.shape and np.abs(value - want).max() <= 1e-4 * scale:
                return name
        raise AssertionError(f"no tensor of the ONNX model equals {module}'s output")


def _params() -> list[Any]:
    cases = []
    for arch in ARCHS:
        for exporter in EXPORTERS:
            cases.append(pytest.param((arch, exporter), id=f"{arch.name}-{exporter}"))
    return cases


@pytest.fixture(scope="module", params=_params())
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    arch, exporter = request.param
    model = _Current.get(arch)
    exported = model.export(exporter)
    yield Case(model, exporter, exported)
    exported.Clear()
    if arch == ARCHS[-1] and exporter == EXPORTERS[-1]:
        _Current.free()


@pytest.fixture(autouse=True)
def _expected_failure(request: pytest.FixtureRequest) -> None:
    """xfail(strict=True) for a (model, exporter, check) listed in KNOWN_FAILURES."""
    if "case" not in request.fixturenames:
        return
    arch, exporter = request.node.callspec.params["case"]
    check = request.node.originalname.removeprefix("test_")
    if check == "runtimes_agree":
        check = f"runtimes:{request.node.callspec.params['method']}"
    reason = KNOWN_FAILURES.get((arch.name, exporter, check))
    if reason is not None:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))


def _feeds(case: Case, explain: onnx.ModelProto) -> dict[str, np.ndarray]:
    feeds = {INPUT: case.model.image, "output_grad": case.model.seed}
    names = {i.name for i in explain.graph.input}
    if "smoothgrad_noise" in names:
        feeds["smoothgrad_noise"] = case.model.noise
    missing = names - set(feeds)
    assert not missing, f"the explain model asks for inputs the test does not feed: {missing}"
    return feeds


def _saliencies(
    case: Case, method: str, on: tuple[str, ...], **options: Any
) -> dict[str, np.ndarray]:
    """The map of `method` on each runtime of `on`, from one explain model; the model
    and each session freed on return."""
    params = {**PARAMS.get(method, {}), **options.pop("params", {})}
    explain = build_explain_model(case.onnx, method, params=params, **options)
    maps = {}
    try:
        feeds = _feeds(case, explain)
        for runtime in on:
            run = runtimes.load(runtime, explain)
            (got,) = run(feeds, ["saliency"])
            del run  # the session goes before the next one loads
            assert np.all(np.isfinite(got)), f"{case.name} {method} on {runtime}: NaN or inf"
            maps[runtime] = np.array(got)
    finally:
        explain.Clear()
    return maps


def _saliency(case: Case, method: str, **options: Any) -> np.ndarray:
    return _saliencies(case, method, (runtimes.REFERENCE,), **options)[runtimes.REFERENCE]


def _bound(case: Case, method: str, error: float, floor: float = FLOOR) -> tuple[str, float]:
    """(the figures, the bound) for `error` on `method`'s map: max(FACTOR x what float32
    rounding does to the map on this model and input, `floor`). Rounding is the float32
    torch control's distance from float64; where that does not cover `error`, also the
    float64 map's spread under input moves of 1e-5 (several float64 passes, so measured
    only then: the verdict is the same as always measuring it)."""
    exact = case.model.torch_map(method, torch.float64)
    control = relative_l2(case.model.torch_map(method, torch.float32), exact)
    bound = max(FACTOR * control, floor)
    figures = f"float32 control {control:.3g}"
    if error > bound:
        spread = case.model.spread(method)
        bound = max(bound, FACTOR * spread)
        figures += f", spread {spread:.3g}"
    return figures, bound


def _against_torch(case: Case, method: str, rectifiers: str) -> None:
    _check_torch(case, method, _saliency(case, method, rectifiers=rectifiers))


def _check_torch(case: Case, method: str, got: np.ndarray) -> None:
    want = case.model.torch_map(method, torch.float64)
    assert got.shape == want.shape and np.abs(want).max() > 0
    error = relative_l2(got, want)
    figures, bound = _bound(case, method, error)
    print(f"\n[{case.name}] {method}: relative L2 {error:.3g}, {figures}")
    assert error <= bound, f"{case.name} {method}: relative L2 {error:.3g} > {bound:.3g}"


def test_vanilla(case: Case) -> None:
    _against_torch(case, "vanilla", "all")


def test_guided(case: Case) -> None:
    _against_torch(case, "guided", "relu")


def _layer_value(case: Case, layer: str) -> np.ndarray:
    probe = onnx.ModelProto()
    probe.CopyFrom(case.onnx)
    run = runtimes.load(runtimes.REFERENCE, with_output(probe, layer))
    (value,) = run({INPUT: case.model.image}, [layer])
    del run
    probe.Clear()
    return np.array(value)


def _reshape_transform(value: np.ndarray, net: torch.nn.Module) -> Any:
    """pytorch-grad-cam's recipe for the layer's layout: tokens [N, T, C] without the
    class tokens as a square grid (its ViT recipe), [N, H, W, C] channels first (Swin's)."""
    if value.ndim == 3:
        prefix = int(getattr(net, "num_prefix_tokens", 0))
        side = round((value.shape[1] - prefix) ** 0.5)

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t[:, prefix:, :].reshape(t.size(0), side, side, t.size(2)).permute(0, 3, 1, 2)

        return tokens
    if value.ndim == 4 and value.shape[-1] > value.shape[1]:
        return lambda t: t.permute(0, 3, 1, 2)
    return None


def _seeded_target(seed: torch.Tensor) -> Any:
    return lambda output: (output * seed).sum()


def test_gradcam(case: Case) -> None:
    layer = case.layer
    assert layer is not None, f"{case.name}: no default Grad-CAM layer"
    value = _layer_value(case, layer)
    model = case.model
    if model.arch.cam_module is None:
        module, module_name = model.layer_module(value)
    else:  # the named module, whose output the layer was found to be
        module_name = model.arch.cam_module
        module = model.net.get_submodule(module_name)
    got = _saliency(case, "gradcam", params={**case.cam_params, "cam_style": "pytorch-grad-cam"})

    pgc = pytorch_grad_cam()
    image = torch.from_numpy(model.image)
    # pytorch-grad-cam calls each target on its sample's output: <seed, output>, what
    # ClassifierOutputTarget (a one-hot seed) and SemanticSegmentationTarget (a class's
    # mask) compute.
    targets = [_seeded_target(torch.from_numpy(s)) for s in model.seed]
    with pgc.GradCAM(
        model=model.net,
        target_layers=[module],
        reshape_transform=_reshape_transform(value, model.net),
    ) as cam:
        want = np.asarray(cam(input_tensor=image, targets=targets))[:, None]
    assert got.shape == want.shape and float(np.abs(want).max()) > 0
    error = float(np.abs(got - want).max())
    print(f"\n[{case.name}] gradcam at {layer} ({module_name}): max error {error:.3g}")
    assert error <= CAM_ATOL, f"{case.name} gradcam at {module_name}: max error {error:.3g}"


@pytest.mark.parametrize("method", ALL_METHODS)
def test_runtimes_agree(case: Case, method: str) -> None:
    """Every method's map on OpenVINO (the other chosen runtimes) against onnxruntime's,
    from the same explain model; SmoothGrad and Integrated Gradients against torch too.

    The bound follows float32 rounding on this model: the method's own float32 torch
    control where torch computes the method, vanilla's for the others."""
    if not ALL and (case.model.arch.name, case.exporter) not in RUNTIME_CASES:
        pytest.skip("this case's runtime check runs under ONNXPLAIN_MODERN=all")
    others = tuple(runtimes.others())
    if not others:
        pytest.skip("ONNXPLAIN_RUNTIMES names no runtime besides onnxruntime CPU")
    params = case.cam_params if "gradcam" in method else {}
    maps = _saliencies(case, method, (runtimes.REFERENCE, *others), params=params)
    want = maps[runtimes.REFERENCE]
    assert np.abs(want).max() > 0, f"{case.name} {method}: the map is all zeros"
    if method in ("smoothgrad", "integrated_gradients"):
        _check_torch(case, method, want)
    figure = method if method in TORCH_METHODS else "vanilla"
    for runtime in others:
        error = relative_l2(maps[runtime], want)
        figures, bound = _bound(case, figure, error, RUNTIME_FLOOR)
        print(f"\n[{case.name}] {method} {runtime} vs onnxruntime: {error:.3g}, {figures}")
        assert error <= bound, f"{case.name} {method} on {runtime}: {error:.3g} > {bound:.3g}"
