"""SmoothGrad and Integrated Gradients on the pretrained models of tests/helpers/realmodels.py:
each converts (its fixed batch of 1 freed), runs, and gives the same map and completeness
gap on every chosen runtime as on onnxruntime CPU.

The inputs and seeds are test_models_wheels.py's. Few copies (2 noisy, 3 steps) keep the
runs short: the batch machinery is the same at any count.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnxplain.graph_rewrite import RewriteError, build_explain_model, default_output
from onnxplain.graph_rewrite.methods.smoothgrad import smoothgrad_noise
from test_models_wheels import CASES, NAMES, fixed_input_shape

from helpers import realmodels, runtimes

SAMPLES, STEPS = 2, 3
# Relative L2 between runtimes: onnxruntime and OpenVINO's base maps agree to 1e-6..1e-5
# on these models (docs/runtimes.md); averaging a few maps does not amplify that.
BOUND = 1e-4

# The zero baseline here: from a blurred baseline the path of PP-OCR rec passes points
# (a = 0.5) where the plain vanilla map itself differs by 1e-3 between the two runtimes
# (measured on the one-sample explain model), a property of the model's kinks there, not of
# the batch; the blur itself is checked across runtimes in test_batch_methods.py.
#
# SmoothGrad's guided gradient with the rule on every rectifier (HardSwish too), as before
# Relu-only became the default: with HardSwish's true gradient, whose slope jumps at ±3,
# the two runtimes' maps of PP-OCR rec differ by 3.4e-4 (measured, with either of the
# HardSwish slope formulations tried), most likely noisy copies putting activations within
# the runtimes' last-bit forward differences of those kinks: the model's, not the batch's.
RECTIFIERS = "all"
BATCH_METHODS = {
    "smoothgrad": {"gradient": "guided", "sigma": 0.1},
    "integrated_gradients": {"steps": STEPS},
}


def seeded_feeds(name: str, explain: onnx.ModelProto, model: onnx.ModelProto) -> dict:
    case = CASES[name]
    image = case.image()
    x = model.graph.input[0].name
    y = default_output(model)
    feeds = {x: image}
    if "smoothgrad_noise" in {i.name for i in explain.graph.input}:
        feeds["smoothgrad_noise"] = smoothgrad_noise(image.shape, SAMPLES, seed=3)
    grad = next(i for i in explain.graph.input if i.name == "output_grad").type.tensor_type
    rank = len(grad.shape.dim)
    # The seed is picked on the explained output of x (the forward model's, asked for where
    # the exporter left it internal, e.g. the logits under a Softmax).
    shape_probe = onnx.ModelProto()
    shape_probe.CopyFrom(model)
    shape_probe.graph.output.append(helper.make_empty_tensor_value_info(y))
    (value,) = runtimes.load(runtimes.REFERENCE, shape_probe)({x: image}, [y])
    assert value.ndim == rank
    feeds["output_grad"] = case.seed(value).astype(np.float32)
    return feeds


# PicoDet's Paddle export bakes its batch of 1 into Reshapes: a batch method must refuse it.
BAKED_BATCH = {"layout_cdla"}


@pytest.mark.parametrize("runtime", runtimes.others())
@pytest.mark.parametrize("method", sorted(BATCH_METHODS))
@pytest.mark.parametrize(
    "name", [n for n in NAMES if getattr(n, "values", (n,))[0] not in BAKED_BATCH]
)
def test_batch_methods_agree_across_runtimes(name: str, method: str, runtime: str) -> None:
    case = CASES[name]
    model = fixed_input_shape(realmodels.load(case.model), case.shape)
    explain = build_explain_model(
        model, method, params=BATCH_METHODS[method], rectifiers=RECTIFIERS
    )
    onnx.checker.check_model(explain)
    feeds = seeded_feeds(name, explain, model)
    names = ["saliency"] + (["completeness_gap"] if method == "integrated_gradients" else [])
    want = runtimes.load(runtimes.REFERENCE, explain)(feeds, names)
    got = runtimes.load(runtime, explain)(feeds, names)
    assert want[0].shape == case.image().shape
    assert np.isfinite(want[0]).all() and np.abs(want[0]).max() > 0
    l2 = float(np.linalg.norm(got[0] - want[0]) / np.linalg.norm(want[0]))
    assert l2 <= BOUND, f"{name} {method} on {runtime}: relative L2 {l2:.2e}"
    if len(names) == 2:
        # The gap is a difference of large sums: bound it by the scale of its terms.
        scale = float(np.abs(want[0]).sum())
        np.testing.assert_allclose(got[1], want[1], atol=BOUND * scale)


@pytest.mark.parametrize("name", sorted(BAKED_BATCH))
def test_a_baked_batch_is_refused_with_the_reason(name: str) -> None:
    case = CASES[name]
    model = fixed_input_shape(realmodels.load(case.model), case.shape)
    for method in BATCH_METHODS:
        with pytest.raises(RewriteError, match=r"keeps a batch of 1.*dynamic batch axis"):
            build_explain_model(model, method, params=BATCH_METHODS[method])
    # The refusal is right: with its input's batch freed, the model itself runs a batch of
    # two in onnxruntime, but into outputs of batch 1: the Reshapes mix the samples.
    freed = onnx.ModelProto()
    freed.CopyFrom(model)
    freed.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    image = case.image()
    run = runtimes.load(runtimes.REFERENCE, freed)
    outputs = run(
        {freed.graph.input[0].name: np.concatenate([image, image])},
        [y.name for y in freed.graph.output],
    )
    assert all(out.shape[0] == 1 for out in outputs), [out.shape for out in outputs]
