"""Conformance: every method on small nets exported from PyTorch (tests/helpers/nets.py), on every
runtime in ONNXPLAIN_RUNTIMES, against onnxruntime CPU and the float64 oracle.

The same checks run on the light zoo (test_models_light.py) and on pretrained models from
wheels (test_models_wheels.py); scripts/gpu_conformance runs all three on CUDA and
TensorRT. Each net is explained for a batch of two samples asking for different classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from helpers import runtimes
from helpers.nets import AllCNNC, ResNetStyle, SquareFC, VGGStyle, export_onnx, randomise_batchnorm
from helpers.subject import Subject, check_onnxruntime_target, check_oracle, check_runtime

CLASSES, SIDE = 10, 32
TARGETS = [3, 7]
METHODS = ["vanilla", "deconvnet", "guided"]

NETS: dict[str, Callable[[], nn.Module]] = {
    "vgg_style": lambda: VGGStyle(CLASSES, SIDE),
    "resnet_style": lambda: ResNetStyle(CLASSES),
    "all_cnn_c": lambda: AllCNNC(CLASSES, narrow=32, wide=64),
    "square_fc": lambda: SquareFC(CLASSES, SIDE),
}


def _one_hot_rows(value: np.ndarray) -> np.ndarray:
    return np.eye(value.shape[1], dtype=np.float32)[TARGETS]


@pytest.fixture(scope="module", params=sorted(NETS))
def net(request: pytest.FixtureRequest) -> Iterator[Subject]:
    generator = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    module = NETS[request.param]()
    randomise_batchnorm(module, generator)
    module.eval()
    image = torch.randn(2, 3, SIDE, SIDE, generator=generator)
    with Subject(request.param, export_onnx(module, image), image.numpy(), _one_hot_rows) as s:
        yield s


@pytest.mark.parametrize("method", METHODS)
def test_method_matches_float64_oracle(net: Subject, method: str) -> None:
    check_oracle(net, method)


@pytest.mark.parametrize("runtime", runtimes.others())
@pytest.mark.parametrize("method", METHODS)
def test_runtimes_agree(net: Subject, method: str, runtime: str) -> None:
    check_runtime(net, method, runtime)


@pytest.mark.parametrize("method", METHODS)
def test_onnxruntime_target_agrees_with_portable(net: Subject, method: str) -> None:
    check_onnxruntime_target(net, method)


def test_runtime_list_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPLAIN_RUNTIMES", "onnxruntime-cpu, onnxruntime-cuda")
    assert runtimes.chosen() == ["onnxruntime-cpu", "onnxruntime-cuda"]
    assert runtimes.others() == ["onnxruntime-cuda"]
    monkeypatch.setenv("ONNXPLAIN_RUNTIMES", "onnxruntime-cpu,tvm")
    with pytest.raises(ValueError, match="tvm"):
        runtimes.chosen()


def test_a_missing_runtime_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    # A skip under CI would hide a broken install; outside CI a missing GPU runtime skips.
    monkeypatch.setattr(runtimes, "missing", lambda name: "not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        runtimes.load("onnxruntime-cuda", onnx.ModelProto())
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        runtimes.load("onnxruntime-cuda", onnx.ModelProto())
    with pytest.raises(pytest.fail.Exception):
        runtimes.load("openvino-cpu", onnx.ModelProto())
