"""LSTM rule against central finite differences (float64 where onnxruntime runs it).

Small sizes (hidden 4, T 5, batch 2) in every direction, with and without initial
states, gradients reaching Y, Y_h or Y_c, and a dynamic sequence length and batch.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.errors import RewriteError

from helpers import runtimes
from helpers.fd import as_dtype, session, single_op_model

RNG = np.random.default_rng(11)
T, B, IN, H = 5, 2, 3, 4


def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
    return np.asarray(scale * RNG.standard_normal(shape), dtype=np.float32)


def lstm_model(
    direction: str, states: bool, attrs: dict | None = None
) -> tuple[onnx.ModelProto, dict]:
    d = 2 if direction == "bidirectional" else 1
    feeds = {"x": normal(T, B, IN)}
    consts = {"w": normal(d, 4 * H, IN, scale=0.5), "r": normal(d, 4 * H, H, scale=0.5),
              "b": normal(d, 8 * H, scale=0.3)}  # fmt: skip
    order = ["x", "w", "r", "b"]
    if states:
        feeds["h0"], feeds["c0"] = normal(d, B, H), normal(d, B, H)
        order += ["", "h0", "c0"]
    model = single_op_model(
        "LSTM", feeds, {"hidden_size": H, "direction": direction, **(attrs or {})}, consts,
        input_order=order, n_outputs=3,
    )  # fmt: skip
    return model, feeds


def symbolic_time_and_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name == "x":
            dims[0].dim_param, dims[1].dim_param = "T", "N"
        else:
            dims[1].dim_param = "N"
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(m)


def assert_vjp_matches(model: onnx.ModelProto, feeds: dict, wrt: str, output: str) -> None:
    """<u, J v> by central differences of onnx's reference evaluator in float64 against
    <saliency, v> from onnxruntime in float32 (onnxruntime has no float64 recurrent ops)."""
    explain = session(build_explain_model(model, "vanilla", input_name=wrt, output_name=output))
    forward = ReferenceEvaluator(as_dtype(model, np.float64))
    x64 = {k: v.astype(np.float64) for k, v in feeds.items()}
    rng = np.random.default_rng(0)
    y = forward.run([output], x64)[0]
    for _ in range(2):
        u, v = rng.standard_normal(y.shape), rng.standard_normal(feeds[wrt].shape)
        step = 1e-6
        plus = forward.run([output], {**x64, wrt: x64[wrt] + step * v})[0]
        minus = forward.run([output], {**x64, wrt: x64[wrt] - step * v})[0]
        numeric = float(np.sum(u * (plus - minus)) / (2 * step))
        run_feeds = {**feeds, "output_grad": u.astype(np.float32)}
        (saliency,) = explain.run(["saliency"], run_feeds)
        analytic = float(np.sum(saliency.astype(np.float64) * v))
        scale = np.linalg.norm(saliency) * np.linalg.norm(v)
        assert abs(analytic - numeric) <= 1e-5 * scale, (analytic, numeric)


DIRECTIONS = ["forward", "reverse", "bidirectional"]


@pytest.mark.parametrize("output", ["y0", "y1", "y2"], ids=["Y", "Y_h", "Y_c"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_lstm_grad_x(direction: str, output: str) -> None:
    model, feeds = lstm_model(direction, states=False)
    assert_vjp_matches(model, feeds, wrt="x", output=output)


@pytest.mark.parametrize("wrt", ["x", "h0", "c0"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_lstm_grad_with_states(direction: str, wrt: str) -> None:
    model, feeds = lstm_model(direction, states=True)
    assert_vjp_matches(model, feeds, wrt=wrt, output="y0")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_lstm_dynamic_time_and_batch(direction: str) -> None:
    """Built once for symbolic T and N, checked at two other lengths and batches."""
    model, _ = lstm_model(direction, states=False)
    dynamic = symbolic_time_and_batch(model)
    for t, n in ((3, 1), (7, 3)):
        assert_vjp_matches(dynamic, {"x": normal(t, n, IN)}, wrt="x", output="y0")


@pytest.mark.parametrize(
    ("attrs", "word"),
    [({"clip": 1.0}, "clip"), ({"input_forget": 1}, "input_forget"),
     ({"activations": ["Tanh", "Tanh", "Tanh"]}, "activations"), ({"layout": 1}, "layout")],
)  # fmt: skip
def test_lstm_refuses_unsupported(attrs: dict, word: str) -> None:
    model, _ = lstm_model("forward", states=False, attrs=attrs)
    with pytest.raises(RewriteError, match=word) as err:
        build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    assert "LSTM" in str(err.value)


@pytest.mark.parametrize("runtime", runtimes.others())
def test_lstm_agrees_across_runtimes(runtime: str) -> None:
    """The dynamic bidirectional model with states, at two sequence lengths."""
    model, _ = lstm_model("bidirectional", states=True)
    explain = build_explain_model(
        symbolic_time_and_batch(model), "vanilla", input_name="x", output_name="y0"
    )
    ref, other = runtimes.load(runtimes.REFERENCE, explain), runtimes.load(runtime, explain)
    for t, n in ((3, 2), (6, 3)):
        feeds = {"x": normal(t, n, IN), "h0": normal(2, n, H), "c0": normal(2, n, H),
                 "output_grad": normal(t, 2, n, H)}  # fmt: skip
        (a,) = ref(feeds, ["saliency"])
        (b,) = other(feeds, ["saliency"])
        assert a.shape == (t, n, IN)
        assert np.linalg.norm(b - a) <= 1e-5 * np.linalg.norm(a)


class _TorchLSTM:
    """A torch.nn.LSTM (2 layers, bidirectional) that returns its output sequence only."""

    @staticmethod
    def build() -> torch.nn.Module:
        torch.manual_seed(5)

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = torch.nn.LSTM(IN, H, num_layers=2, bidirectional=True)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.lstm(x)[0]

        return Net().eval()


def test_lstm_matches_torch_float64_autograd(tmp_path) -> None:
    """torch.onnx.export(dynamo=False) emits ONNX LSTM nodes; the saliency at two sequence
    lengths and batches is torch's float64 vector-Jacobian product."""
    net = _TorchLSTM.build()
    path = tmp_path / "lstm.onnx"
    torch.onnx.export(
        net, (torch.zeros(T, B, IN),), str(path), dynamo=False, input_names=["x"],
        output_names=["y"], dynamic_axes={"x": {0: "T", 1: "N"}, "y": {0: "T", 1: "N"}},
        opset_version=17,
    )  # fmt: skip
    model = onnx.load(str(path))
    assert sum(n.op_type == "LSTM" for n in model.graph.node) == 2
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y")
    exp = session(explain)
    _assert_matches_float64_at_two_lengths(exp, net)


def gru_rnn_model(op: str, direction: str, states: bool, attrs: dict | None = None) -> tuple:
    d, gates = (2 if direction == "bidirectional" else 1), (3 if op == "GRU" else 1)
    feeds = {"x": normal(T, B, IN)}
    consts = {"w": normal(d, gates * H, IN, scale=0.5), "r": normal(d, gates * H, H, scale=0.5),
              "b": normal(d, 2 * gates * H, scale=0.3)}  # fmt: skip
    order = ["x", "w", "r", "b"]
    if states:
        feeds["h0"] = normal(d, B, H)
        order += ["", "h0"]
    model = single_op_model(
        op, feeds, {"hidden_size": H, "direction": direction, **(attrs or {})}, consts,
        input_order=order, n_outputs=2,
    )  # fmt: skip
    return model, feeds


GRU_RNN = [("GRU", {"linear_before_reset": 0}), ("GRU", {"linear_before_reset": 1}), ("RNN", {})]
GRU_RNN_IDS = ["GRU-lbr0", "GRU-lbr1", "RNN"]


@pytest.mark.parametrize("output", ["y0", "y1"], ids=["Y", "Y_h"])
@pytest.mark.parametrize("wrt", ["x", "h0"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(("op", "attrs"), GRU_RNN, ids=GRU_RNN_IDS)
def test_gru_rnn_grad(op: str, attrs: dict, direction: str, wrt: str, output: str) -> None:
    model, feeds = gru_rnn_model(op, direction, states=True, attrs=attrs)
    assert_vjp_matches(model, feeds, wrt=wrt, output=output)


@pytest.mark.parametrize(("op", "attrs"), GRU_RNN, ids=GRU_RNN_IDS)
def test_gru_rnn_dynamic_time_and_batch(op: str, attrs: dict) -> None:
    model, _ = gru_rnn_model(op, "bidirectional", states=False, attrs=attrs)
    dynamic = symbolic_time_and_batch(model)
    for t, n in ((3, 1), (7, 3)):
        assert_vjp_matches(dynamic, {"x": normal(t, n, IN)}, wrt="x", output="y0")


@pytest.mark.parametrize("runtime", runtimes.others())
@pytest.mark.parametrize(("op", "attrs"), GRU_RNN, ids=GRU_RNN_IDS)
def test_gru_rnn_agree_across_runtimes(op: str, attrs: dict, runtime: str) -> None:
    model, _ = gru_rnn_model(op, "bidirectional", states=True, attrs=attrs)
    explain = build_explain_model(
        symbolic_time_and_batch(model), "vanilla", input_name="x", output_name="y0"
    )
    ref, other = runtimes.load(runtimes.REFERENCE, explain), runtimes.load(runtime, explain)
    for t, n in ((3, 2), (6, 3)):
        feeds = {"x": normal(t, n, IN), "h0": normal(2, n, H), "output_grad": normal(t, 2, n, H)}
        (a,) = ref(feeds, ["saliency"])
        (b,) = other(feeds, ["saliency"])
        assert np.linalg.norm(b - a) <= 1e-5 * np.linalg.norm(a)


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_gru_rnn_match_torch_float64_autograd(kind: str, tmp_path) -> None:
    """torch's GRU exports linear_before_reset=1; its RNN the Tanh RNN op."""
    torch.manual_seed(6)
    layer = getattr(torch.nn, kind)(IN, H, bidirectional=True)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)[0]

    net = Net().eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(
        net, (torch.zeros(T, B, IN),), str(path), dynamo=False, input_names=["x"],
        output_names=["y"], dynamic_axes={"x": {0: "T", 1: "N"}, "y": {0: "T", 1: "N"}},
        opset_version=17,
    )  # fmt: skip
    model = onnx.load(str(path))
    assert any(n.op_type == kind for n in model.graph.node)
    exp = session(build_explain_model(model, "vanilla", input_name="x", output_name="y"))
    _assert_matches_float64_at_two_lengths(exp, net)


def _assert_matches_float64_at_two_lengths(exp: ort.InferenceSession, net: torch.nn.Module) -> None:
    """The explain session's saliency against torch float64 autograd of `net` (made
    float64 here), at two sequence lengths and batch sizes through the one model."""
    net64 = net.double()
    for t, n in ((3, 2), (6, 1)):
        x, u = normal(t, n, IN), normal(t, n, 2 * H)
        (saliency,) = exp.run(["saliency"], {"x": x, "output_grad": u})
        x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        (expected,) = torch.autograd.grad(net64(x64), x64, torch.tensor(u, dtype=torch.float64))
        ref = expected.numpy()
        assert np.linalg.norm(saliency - ref) <= 1e-5 * np.linalg.norm(ref)
