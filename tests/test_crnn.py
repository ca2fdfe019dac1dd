"""A small CRNN (conv -> BiLSTM -> linear, as text recognisers are) exported with a dynamic
batch and width: vanilla and guided saliency against torch float64 autograd and Captum's
GuidedBackprop on the torch module, and onnxruntime against OpenVINO."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from captum.attr import GuidedBackprop
from onnxplain.graph_rewrite import build_explain_model

from helpers import runtimes
from helpers.fd import session

HEIGHT, CLASSES = 8, 5


class CRNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.lstm = torch.nn.LSTM(8 * HEIGHT // 2, 6, bidirectional=True)
        self.head = torch.nn.Linear(12, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))  # [N, C, H/2, W/2]
        seq = f.flatten(1, 2).permute(2, 0, 1)  # [W/2, N, C·H/2]: one step per column
        out = self.head(self.lstm(seq)[0])  # [W/2, N, classes]
        return out.permute(1, 0, 2).flatten(1)  # [N, W/2·classes]


@pytest.fixture(scope="module")
def crnn(tmp_path_factory) -> tuple[torch.nn.Module, onnx.ModelProto]:
    torch.manual_seed(7)
    net = CRNN().eval()
    path = tmp_path_factory.mktemp("crnn") / "crnn.onnx"
    torch.onnx.export(
        net, (torch.zeros(2, 1, HEIGHT, 12),), str(path), dynamo=False, input_names=["x"],
        output_names=["y"], dynamic_axes={"x": {0: "N", 3: "W"}, "y": {0: "N", 1: "K"}},
        opset_version=17,
    )  # fmt: skip
    model = onnx.load(str(path))
    assert any(n.op_type == "LSTM" for n in model.graph.node)
    return net, model


def one_hot(n: int, k: int, index: int) -> np.ndarray:
    u = np.zeros((n, k), dtype=np.float32)
    u[:, index] = 1.0
    return u


@pytest.mark.parametrize("method", ["vanilla", "guided"])
@pytest.mark.parametrize("width", [8, 14])
def test_crnn_saliency_matches_torch(crnn, method: str, width: int) -> None:
    net, model = crnn
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 1, HEIGHT, width)).astype(np.float32)
    k, target = (width // 2) * CLASSES, 7
    exp = session(build_explain_model(model, method, input_name="x", output_name="y"))
    (got,) = exp.run(["saliency"], {"x": x, "output_grad": one_hot(2, k, target)})
    if method == "vanilla":
        net64 = CRNN().double().eval()
        net64.load_state_dict(net.state_dict())
        x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        (want_t,) = torch.autograd.grad(net64(x64)[:, target].sum(), x64)
        want = want_t.numpy()
    else:
        want = GuidedBackprop(net).attribute(torch.tensor(x), target=target).detach().numpy()
    assert np.abs(want).max() > 0
    assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want)


@pytest.mark.parametrize("runtime", runtimes.others())
def test_crnn_agrees_across_runtimes(crnn, runtime: str) -> None:
    _, model = crnn
    explain = build_explain_model(model, "guided", input_name="x", output_name="y")
    ref, other = runtimes.load(runtimes.REFERENCE, explain), runtimes.load(runtime, explain)
    rng = np.random.default_rng(1)
    for n, width in ((1, 10), (3, 16)):
        x = rng.standard_normal((n, 1, HEIGHT, width)).astype(np.float32)
        u = rng.standard_normal((n, (width // 2) * CLASSES)).astype(np.float32)
        (a,) = ref({"x": x, "output_grad": u}, ["saliency"])
        (b,) = other({"x": x, "output_grad": u}, ["saliency"])
        assert np.linalg.norm(b - a) <= 1e-5 * np.linalg.norm(a)
