"""The sanity check's numbers against Quantus 0.6.0's MPRT on the same PyTorch net.

Quantus randomises the torch modules top-down with its own generator and explains each copy
with Captum; onnxplain randomises the exported ONNX initializers and explains each copy with
its explain model. Given the same random weights (Quantus's, handed to our cascade), both
must visit the layers in the same order and find the same rank correlations.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import captum.attr as captum_attr
import numpy as np
import onnx
import pytest
import quantus  # the test extra pins 0.6.0; missing, the module fails to import: no skip
import torch
from onnxplain.sanity import parameter_layers, run_sanity
from torch import nn

SEED = 42  # Quantus's seed for the layer re-initialisation


def tiny_all_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 5, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


def to_onnx(net: nn.Module, x: np.ndarray) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        net,
        (torch.from_numpy(x[:1]),),
        buffer,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
        do_constant_folding=False,
    )
    return onnx.load_from_string(buffer.getvalue())


CAPTUM = {
    "vanilla": lambda net: captum_attr.Saliency(net),
    "deconvnet": lambda net: captum_attr.Deconvolution(net),
    "guided": lambda net: captum_attr.GuidedBackprop(net),
}


def captum_explainer(method: str) -> Callable[..., np.ndarray]:
    """Quantus's explain_func: Captum's map, reduced as onnxplain's spearman_abs reduces it."""

    def explain(
        model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object
    ) -> np.ndarray:
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).requires_grad_(True)
        kwargs = {"abs": False} if method == "vanilla" else {}
        attr = CAPTUM[method](model.eval()).attribute(
            x, target=torch.as_tensor(np.asarray(targets)), **kwargs
        )
        return attr.detach().abs().sum(dim=1, keepdim=True).numpy()

    return explain


def quantus_random_state(net: nn.Module) -> dict[str, np.ndarray]:
    """The weights Quantus's top-down generator leaves once every layer is re-drawn."""
    wrapped = quantus.helpers.model.pytorch_model.PyTorchModel(net, channel_first=True)
    # The generator re-draws one more layer of the same copy at each step: keep the last.
    *_, (_, model) = wrapped.get_random_layer_generator(order="top_down", seed=SEED)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_spearman_abs_matches_quantus_mprt(method: str) -> None:
    net = tiny_all_cnn()
    x = np.random.default_rng(1).normal(size=(4, 3, 16, 16)).astype(np.float32)
    y = net(torch.from_numpy(x)).argmax(1).numpy()
    explain = captum_explainer(method)
    metric = quantus.MPRT(
        layer_order="top_down",
        seed=SEED,
        abs=True,
        normalise=True,
        disable_warnings=True,
        display_progressbar=False,
    )
    theirs = metric(
        model=net,
        x_batch=x,
        y_batch=y,
        a_batch=explain(net, x, y),
        explain_func=explain,
        channel_first=True,
        device="cpu",
    )
    layers = [k for k in theirs if k != "original"]

    random_state = quantus_random_state(net)
    ours = run_sanity(
        to_onnx(net, x),
        x,
        [method],
        targets=list(y),
        draw=lambda name, value, fan_in: random_state[name],
        score="last",
    )
    steps = ours.methods[0].steps
    # Same layers, same order: Quantus names torch modules, the exporter names nodes after them.
    assert [s.layer for s in steps] == [f"/{name}/Conv" for name in layers]
    got = [s.similarity["spearman_abs"] for s in steps]
    want = [float(np.mean(theirs[name])) for name in layers]
    np.testing.assert_allclose(got, want, atol=0.01)
    # The check must have something to find: randomising the top changes the map.
    assert min(want) < 0.9


def test_reinit_bounds_are_pytorchs() -> None:
    """reinit_draw's U(±1/sqrt(fan_in)) is reset_parameters' bound: the fan-ins agree."""
    net = tiny_all_cnn()
    x = np.zeros((1, 3, 16, 16), np.float32)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)][::-1]
    layers = parameter_layers(to_onnx(net, x))
    fan_ins = [nn.init._calculate_fan_in_and_fan_out(c.weight)[0] for c in convs]
    assert [layer.fan_in for layer in layers] == fan_ins
