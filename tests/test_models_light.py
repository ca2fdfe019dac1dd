"""Whole-model checks on the nine architectures of onnx's light zoo, weights redrawn
(tests/helpers/lightzoo.py), explaining class 281 of a random image.

Oracles nobody here wrote:
- vanilla saliency against central finite differences of the forward model (tests/helpers/fd.py),
  a coarse check through up to 120 float32 layers;
- every method against onnx2torch's PyTorch module in float64: autograd for vanilla,
  Captum's Deconvolution and GuidedBackprop for the others (tests/helpers/oracle.py);
- the portable explain model on every other runtime (ONNXPLAIN_RUNTIMES) against
  onnxruntime CPU, and the onnxruntime-only one against the portable one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import model_files, runtimes
from helpers.fd import one_session_at_a_time_vjp_error as fd_error
from helpers.fd import session, with_first_output
from helpers.lightzoo import NAMES, image_for, load
from helpers.subject import Subject, check_onnxruntime_target, check_oracle, check_runtime

SLOW = {"densenet121", "inception_v2", "resnet50", "vgg19"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES]
METHODS = ["vanilla", "deconvnet", "guided"]
TARGET_CLASS = 281

# onnxruntime has no float64 Conv, so <u, Jv> comes from float32 central differences
# through up to 120 layers at 224x224: a step of 1e-3 crosses ReLU kinks and max-pool
# switches, a smaller one drowns in rounding. Measured 3e-2 to 6e-2 on the plain nets; the
# deep BatchNorm nets are more chaotic (~0.2-0.3). So this catches gross errors only (a
# transposed kernel, a lost branch err by O(1)); the float64 oracle is the precise check.
FD_STEP = 1e-3
FD_TOLERANCE = {"inception_v2": 0.6, "resnet50": 0.6, "densenet121": 0.6}
FD_DEFAULT_TOLERANCE = 0.15


def _one_hot(value: np.ndarray) -> np.ndarray:
    seed = np.zeros_like(value)  # [1, 1000] or [1, 1000, 1, 1]
    seed.reshape(-1)[TARGET_CLASS] = 1.0
    return seed


@pytest.fixture(scope="module", params=MODELS)
def light(request: pytest.FixtureRequest) -> Iterator[Subject]:
    model = load(request.param)
    # The subject's exit frees what its tests shared before the next model loads.
    with Subject(request.param, model, image_for(model)[1], _one_hot) as subject:
        yield subject


def test_vanilla_matches_finite_differences(light: Subject) -> None:
    def explain() -> ort.InferenceSession:
        with light.explained("vanilla") as model:
            return session(model)

    def forward() -> ort.InferenceSession:
        return session(with_first_output(light.model, light.output))

    feeds = {light.input: light.image}
    out_shape = light.seed.shape
    err = fd_error(forward, explain, feeds, light.input, out_shape, np.float32, FD_STEP, 2, 0)
    tolerance = FD_TOLERANCE.get(light.name, FD_DEFAULT_TOLERANCE)
    assert err < tolerance, f"VJP mismatch {err:.3g} in float32"


@pytest.mark.parametrize("method", METHODS)
def test_method_matches_float64_oracle(light: Subject, method: str) -> None:
    check_oracle(light, method)


@pytest.mark.parametrize("runtime", runtimes.others())
@pytest.mark.parametrize("method", METHODS)
def test_runtimes_agree(light: Subject, method: str, runtime: str) -> None:
    check_runtime(light, method, runtime)


@pytest.mark.parametrize("method", METHODS)
def test_onnxruntime_target_agrees_with_portable(light: Subject, method: str) -> None:
    check_onnxruntime_target(light, method)


def test_original_outputs_ride_along(light: Subject) -> None:
    # The explain model keeps the original outputs (up to rounding: onnxruntime fuses the
    # forward part of the explain graph a little differently).
    original = light.model.graph.output[0].name
    with light.explained("guided") as model:
        explain = session(model)
    got = explain.run([original], {light.input: light.image, "output_grad": light.seed})[0]
    del explain  # one session at a time: the forward model's comes next
    want = session(light.model).run([original], {light.input: light.image})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_explain_model_passes_the_checker(light: Subject, tmp_path: Path) -> None:
    # Checked from a file with its weights beside it: the same graph, types and shapes, and
    # no copy of the weights (the checker copied VGG-19's 1 GB explain model twice: the
    # run's memory peak).
    path = tmp_path / "explain.onnx"
    with light.explained("guided") as model:
        model_files.save_with_external_weights(model, path)
    onnx.checker.check_model(str(path), full_check=True)
