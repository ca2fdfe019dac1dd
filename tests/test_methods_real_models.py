"""Grad-CAM (both styles), Guided Grad-CAM and input × gradient on the pretrained models of
tests/test_models_wheels.py (same inputs, same seeds): each converts, runs, and gives the
same map on onnxruntime CPU and on every other chosen runtime (OpenVINO CPU by default).

The classifiers use their default layer (the last spatial tensor before the global pool);
the detectors and the recogniser have none (their output is itself spatial or a sequence),
so the layer is the feature map the last convolution reads (see a_layer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import (
    build_explain_model,
    default_input,
    default_layer,
    default_output,
)
from onnxplain.graph_rewrite.model_info import ModelInfo
from onnxplain.graph_rewrite.prepare import normalise
from onnxplain.graph_rewrite.walk import Endpoints, differentiated_path
from test_models_wheels import CASES, SLOW, fixed_input_shape

from helpers import realmodels, runtimes
from helpers.oracle import cut_at, max_error, relative_l2

# (method, parameters): every new method, Grad-CAM in both conventions.
VARIANTS = {
    "gradcam-captum": ("gradcam", {"cam_style": "captum"}),
    "gradcam-pytorch-grad-cam": ("gradcam", {"cam_style": "pytorch-grad-cam"}),
    "guided_gradcam": ("guided_gradcam", {}),
    "input_x_gradient": ("input_x_gradient", {}),
}
# Without kinks or ties near rounding, float32 maps of these models sit 1e-7 to 2e-6 apart
# between CPU runtimes (tests/helpers/subject.py). Every new method is built from the true
# gradient, so where the runtimes' vanilla maps differ more (orientation: 2.6e-3 relative
# L2, hard-swish kinks within rounding, which test_models_wheels's float64 oracle
# accounts for), a new method may differ by FACTOR times that, no more.
BOUND = 1e-4
FACTOR = 4.0
# Where a_layer's choice gives a map that is 0 everywhere for the test's seed: the layout
# detector's last feature map (hardswish_96) has Σ_c w_c·A_c between -4.1e-5 and -1.0e-5
# at every pixel for the best anchor's class (measured), so ReLU leaves nothing to
# compare; three blocks earlier the sum changes sign.
LAYERS = {"layout_cdla": "hardswish_93.tmp_0"}


@dataclass
class Model:
    name: str
    model: onnx.ModelProto
    input: str
    image: np.ndarray
    seed: np.ndarray
    layer: str
    # per runtime: how far its vanilla map is from onnxruntime CPU's (rel. L2, max error)
    vanilla_gap: dict[str, tuple[float, float]]

    def bound(self, runtime: str) -> tuple[float, float]:
        if runtime not in self.vanilla_gap:
            explain = build_explain_model(self.model, "vanilla")
            feeds = {self.input: self.image, "output_grad": self.seed}
            (want,) = runtimes.load(runtimes.REFERENCE, explain)(feeds, ["saliency"])
            (got,) = runtimes.load(runtime, explain)(feeds, ["saliency"])
            self.vanilla_gap[runtime] = (relative_l2(got, want), max_error(got, want))
        l2, peak = self.vanilla_gap[runtime]
        return max(BOUND, FACTOR * l2), max(BOUND, FACTOR * peak)


def a_layer(model: onnx.ModelProto, image_shape: tuple[int, ...]) -> str:
    """The default layer, else the feature map the last Conv on the path to the explained
    output reads, where it is 4-D below the input's size (a detector's heads end in a conv
    that turns features into logits; a map of those logits' one seeded channel may be 0)."""
    found = default_layer(model)
    if found is not None:
        return found
    normalised = normalise(model)
    ends = Endpoints(default_input(model), default_output(model))
    on_path = differentiated_path(ModelInfo(normalised), ends).tensors
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in normalised.graph.value_info
    }
    for node in reversed(normalised.graph.node):
        if node.op_type != "Conv":
            continue
        shape = shapes.get(node.input[0], [])
        below = len(shape) == 4 and 1 < shape[2] < image_shape[2]
        if below and node.output[0] in on_path:
            return node.input[0]
    raise AssertionError("no convolution output to take Grad-CAM at")


NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES]


@pytest.fixture(scope="module", params=NAMES)
def real(request: pytest.FixtureRequest) -> Iterator[Model]:
    case = CASES[request.param]
    model = fixed_input_shape(realmodels.load(case.model), case.shape)
    image = case.image()
    name, output = default_input(model), default_output(model)
    forward = runtimes.load(runtimes.REFERENCE, cut_at(model, output))
    seed = case.seed(forward({name: image}, [output])[0]).astype(np.float32)
    yield Model(
        request.param,
        model,
        name,
        image,
        seed,
        LAYERS.get(request.param) or a_layer(model, image.shape),
        {},
    )


@pytest.mark.parametrize("runtime", runtimes.others())
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_new_methods_agree_across_runtimes(real: Model, variant: str, runtime: str) -> None:
    method, params = VARIANTS[variant]
    if method != "input_x_gradient":
        params = {**params, "layer": real.layer}
    explain = build_explain_model(real.model, method, params=params)
    feeds = {real.input: real.image, "output_grad": real.seed}
    (want,) = runtimes.load(runtimes.REFERENCE, explain)(feeds, ["saliency"])
    (got,) = runtimes.load(runtime, explain)(feeds, ["saliency"])
    channels = 1 if method == "gradcam" else real.image.shape[1]
    assert want.shape == (real.image.shape[0], channels, *real.image.shape[2:])
    assert np.all(np.isfinite(want)) and np.abs(want).max() > 0, f"{variant}: an empty map"
    l2, peak = relative_l2(got, want), max_error(got, want)
    l2_bound, peak_bound = real.bound(runtime)
    print(f"{real.name} {variant} at {real.layer!r}: {runtime} rel. L2 {l2:.2g}, max {peak:.2g}")
    assert l2 <= l2_bound and peak <= peak_bound, (
        f"{runtime}: rel. L2 {l2:.3g} (bound {l2_bound:.3g}), "
        f"max {peak:.3g} (bound {peak_bound:.3g})"
    )
