"""com.microsoft DynamicQuantizeLSTM, as onnxruntime's quantize_dynamic writes it for an LSTM.

The models are torch.nn.LSTMs exported by torch.onnx (TorchScript, opset 17, dynamic T and
batch) and quantized by onnxruntime.quantization.quantize_dynamic. The reference is torch
float64 autograd on an nn.LSTM that holds the dequantized weights, (q - zero_point) · scale,
put back into torch's gate order (i, f, g, o; ONNX's is i, o, f, c): the rule's definition,
the straight-through estimator at the float input. Each model's output concatenates Y and
Y_h, so one seed reaches both.

quantize_dynamic writes int8 LSTM weights whatever weight_type says (its LSTM quantizer
asks for INT8), so uint8 weights with nonzero zero points are made here from the int8 ones:
onnxruntime runs both to the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnxplain.graph_rewrite import UnsupportedOpsError, build_explain_model
from onnxplain.graph_rewrite.errors import RewriteError
from onnxruntime.quantization import QuantType, quantize_dynamic
from test_crnn import CLASSES, CRNN, HEIGHT
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import runtimes
from helpers.fd import session

IN, H = 5, 4
OP = "DynamicQuantizeLSTM"
# ONNX's gate blocks are i, o, f, c; torch's i, f, g (= c), o.
TORCH_GATES = [0, 2, 3, 1]


class Recurrent(torch.nn.Module):
    """The LSTM's Y [T, N, D·H] with Y_h as one more step: [T + 1, N, D·H]."""

    def __init__(self, lstm: torch.nn.LSTM, packed: bool = False) -> None:
        super().__init__()
        self.lstm, self.packed = lstm, packed

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        if self.packed:  # extra: the lengths
            seq = pack_padded_sequence(x, extra[0], enforce_sorted=False)
            y, (h, _) = self.lstm(seq)
            y, _ = pad_packed_sequence(y, total_length=x.shape[0])
        else:  # extra: (h0, c0) or nothing
            y, (h, _) = self.lstm(x, tuple(extra)) if extra else self.lstm(x)
        return torch.cat([y, h.permute(1, 0, 2).reshape(1, x.shape[1], -1)], 0)


@dataclass(frozen=True)
class Case:
    bidirectional: bool
    states: bool  # initial states as graph inputs (else absent: torch exports zeros)
    weight_type: QuantType = QuantType.QInt8
    per_channel: bool = False
    packed: bool = False  # sequence_lens from torch's packed sequence
    reduce_range: bool = False

    @property
    def inputs(self) -> list[str]:
        return ["x", "lens"] if self.packed else ["x", "h0", "c0"] if self.states else ["x"]


def export_and_quantize(case: Case, folder: Path) -> tuple[onnx.ModelProto, torch.nn.LSTM]:
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(IN, H, bidirectional=case.bidirectional).eval()
    d = 2 if case.bidirectional else 1
    x = torch.zeros(6, 3, IN)
    args: tuple[torch.Tensor, ...] = (x,)
    dynamic = {"x": {0: "T", 1: "N"}, "out": {0: "T1", 1: "N"}}
    if case.packed:
        args, dynamic["lens"] = (x, torch.tensor([6, 3, 1])), {0: "N"}
    elif case.states:
        args = (x, torch.zeros(d, 3, H), torch.zeros(d, 3, H))
        dynamic |= {"h0": {1: "N"}, "c0": {1: "N"}}
    torch.onnx.export(
        Recurrent(lstm, case.packed).eval(), args, str(folder / "float.onnx"), dynamo=False,
        opset_version=17, input_names=case.inputs, output_names=["out"], dynamic_axes=dynamic,
    )  # fmt: skip
    quantize_dynamic(
        folder / "float.onnx", folder / "dynamic.onnx", weight_type=case.weight_type,
        per_channel=case.per_channel, reduce_range=case.reduce_range,
    )  # fmt: skip
    model = onnx.load(folder / "dynamic.onnx")
    assert [n.op_type for n in model.graph.node].count(OP) == 1
    assert "LSTM" not in {n.op_type for n in model.graph.node}
    return model, lstm


def dq_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == OP)


def dequantized(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [D, 4H, IN], R [D, 4H, H] (ONNX LSTM's layout and gate order) and B [D, 8H]."""
    node = dq_node(model)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = []
    for q_at, s_at, z_at in ((1, 8, 9), (2, 10, 11)):
        q, s, z = (consts[node.input[i]] for i in (q_at, s_at, z_at))
        d = q.shape[0]  # q: [D, K, 4H]; s, z: [D] or [D, 4H]
        s, z = s.reshape(d, 1, -1), z.reshape(d, 1, -1)
        w = (q.astype(np.float32) - z.astype(np.float32)) * s
        out.append(w.transpose(0, 2, 1))
    return out[0], out[1], consts[node.input[3]]


def torch_reference(model: onnx.ModelProto, case: Case) -> Recurrent:
    """The float64 nn.LSTM with the model's dequantized weights and its biases."""
    w, r, b = dequantized(model)
    hidden, inputs = r.shape[2], w.shape[2]
    lstm = torch.nn.LSTM(inputs, hidden, bidirectional=case.bidirectional).double().eval()

    def torch_order(a: np.ndarray) -> torch.Tensor:
        blocks = np.split(a.astype(np.float64), 4, axis=0)
        return torch.from_numpy(np.concatenate([blocks[i] for i in TORCH_GATES], axis=0))

    with torch.no_grad():
        for d, suffix in enumerate(["", "_reverse"][: w.shape[0]]):
            getattr(lstm, f"weight_ih_l0{suffix}").copy_(torch_order(w[d]))
            getattr(lstm, f"weight_hh_l0{suffix}").copy_(torch_order(r[d]))
            getattr(lstm, f"bias_ih_l0{suffix}").copy_(torch_order(b[d, : 4 * hidden]))
            getattr(lstm, f"bias_hh_l0{suffix}").copy_(torch_order(b[d, 4 * hidden :]))
    return Recurrent(lstm, case.packed)


def feeds_for(case: Case, steps: int, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = 2 if case.bidirectional else 1
    feeds = {"x": rng.standard_normal((steps, batch, IN)).astype(np.float32)}
    if case.packed:
        lens = rng.integers(1, steps + 1, batch)
        lens[0] = steps  # pad_packed_sequence pads to T; the longest item need not be first
        feeds["lens"] = lens.astype(np.int64)
    elif case.states:
        feeds["h0"] = rng.standard_normal((d, batch, H)).astype(np.float32)
        feeds["c0"] = rng.standard_normal((d, batch, H)).astype(np.float32)
    return feeds


def relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def saliency_errors(
    model: onnx.ModelProto,
    case: Case,
    wrt: str = "x",
    shapes: tuple[tuple[int, int], ...] = ((6, 3), (9, 2)),
) -> list[float]:
    """Relative L2 of the explain model's map (onnxruntime, float32) from torch's float64
    gradient, at two sequence lengths and batch sizes (the model's T and N are dynamic)."""
    explain = build_explain_model(model, "vanilla", input_name=wrt, output_name="out")
    onnx.checker.check_model(explain)
    run = session(explain)
    reference = torch_reference(model, case)
    errors = []
    for steps, batch in shapes:
        feeds = feeds_for(case, steps, batch, seed=steps)
        d = 2 if case.bidirectional else 1
        seed = np.random.default_rng(batch).standard_normal((steps + 1, batch, d * H))
        (got,) = run.run(["saliency"], {**feeds, "output_grad": seed.astype(np.float32)})
        tensors = {
            k: torch.tensor(v, dtype=torch.float64 if k != "lens" else torch.int64)
            for k, v in feeds.items()
        }
        tensors[wrt].requires_grad_(True)
        out = reference(*(tensors[k] for k in case.inputs))
        (want,) = torch.autograd.grad((out * torch.from_numpy(seed)).sum(), tensors[wrt])
        assert np.abs(want.numpy()).max() > 0
        errors.append(relative_l2(got, want.numpy()))
    return errors


CASES = {
    "forward": Case(bidirectional=False, states=False),
    "forward-states": Case(bidirectional=False, states=True),
    "bidirectional": Case(bidirectional=True, states=False),
    "bidirectional-states": Case(bidirectional=True, states=True),
    "bidirectional-states-per-channel": Case(True, True, per_channel=True),
    "forward-per-channel": Case(False, False, per_channel=True),
    "bidirectional-states-quint8": Case(True, True, weight_type=QuantType.QUInt8),
    "bidirectional-sequence-lens": Case(True, False, packed=True),
    "forward-sequence-lens-per-channel": Case(False, False, per_channel=True, packed=True),
}


Models = dict[str, onnx.ModelProto]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Models:
    models = {}
    for name, case in CASES.items():
        models[name] = export_and_quantize(case, tmp_path_factory.mktemp(name))[0]
    return models


@pytest.mark.parametrize("name", list(CASES))
def test_saliency_matches_torch_float64_on_the_dequantized_lstm(
    quantized: Models, name: str
) -> None:
    model, case = quantized[name], CASES[name]
    if case.packed:  # quantize_dynamic keeps LSTM's sequence_lens
        assert dq_node(model).input[4]
    errors = saliency_errors(model, case)
    assert max(errors) <= 1e-5, errors


@pytest.mark.parametrize("wrt", ["h0", "c0"])
def test_initial_states_get_their_gradient(quantized: Models, wrt: str) -> None:
    name = "bidirectional-states-per-channel"
    errors = saliency_errors(quantized[name], CASES[name], wrt=wrt)
    assert max(errors) <= 1e-5, errors


def test_quantize_dynamic_writes_int8_lstm_weights_whatever_the_weight_type(
    quantized: Models,
) -> None:
    consts = {t.name: t for t in quantized["bidirectional-states-quint8"].graph.initializer}
    node = dq_node(quantized["bidirectional-states-quint8"])
    for i in (1, 2, 9, 11):
        assert consts[node.input[i]].data_type == onnx.TensorProto.INT8
    scale = consts[node.input[8]]
    assert list(scale.dims) == [2]  # per direction
    per_channel = dq_node(quantized["bidirectional-states-per-channel"]).input[8]
    dims = next(
        t.dims
        for t in quantized["bidirectional-states-per-channel"].graph.initializer
        if t.name == per_channel
    )
    assert list(dims) == [2, 4 * H]  # per direction and gate column


def as_uint8(model: onnx.ModelProto, zero_points: list[int]) -> onnx.ModelProto:
    """The model with W and R as uint8 q + z, z one per direction (broadcast along the
    columns where the scale is per column); the same dequantized values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = dq_node(out)
    by_name = {t.name: t for t in out.graph.initializer}
    for q_at, z_at in ((1, 9), (2, 11)):
        q = numpy_helper.to_array(by_name[node.input[q_at]]).astype(np.int64)
        z_old = numpy_helper.to_array(by_name[node.input[z_at]])
        assert not z_old.any()
        z = np.asarray(zero_points, np.int64).reshape(-1, *[1] * (z_old.ndim - 1))
        z = np.broadcast_to(z, z_old.shape)
        shifted = q + z.reshape(z.shape[0], 1, -1)
        assert shifted.min() >= 0 and shifted.max() <= 255
        by_name[node.input[q_at]].CopyFrom(
            numpy_helper.from_array(shifted.astype(np.uint8), node.input[q_at])
        )
        by_name[node.input[z_at]].CopyFrom(
            numpy_helper.from_array(z.astype(np.uint8), node.input[z_at])
        )
    return out


@pytest.mark.parametrize("per_channel", [False, True])
def test_uint8_weights_with_zero_points(tmp_path: Path, per_channel: bool) -> None:
    # reduce_range: 7-bit weights, so that q + z fits uint8.
    case = Case(True, True, per_channel=per_channel, reduce_range=True)
    int8, _ = export_and_quantize(case, tmp_path)
    # onnxruntime refuses a per-column uint8 zero point unless all D·4H of them are one
    # value ("Weight point must be constant"); per direction they may differ.
    uint8 = as_uint8(int8, [110, 110] if per_channel else [128, 97])
    feeds = feeds_for(case, 7, 3, seed=1)
    (a,) = session(int8).run(["out"], feeds)
    (b,) = session(uint8).run(["out"], feeds)
    # onnxruntime reads the zero points as dequantization does: the same weights.
    assert relative_l2(b, a) <= 1e-6
    errors = saliency_errors(uint8, case)
    assert max(errors) <= 1e-5, errors


def forward_gap(model: onnx.ModelProto, case: Case) -> float:
    """onnxruntime's DynamicQuantizeLSTM against the float64 LSTM with its weights."""
    feeds = feeds_for(case, 7, 3, seed=2)
    (got,) = session(model).run(["out"], feeds)
    tensors = [torch.tensor(feeds[k], dtype=torch.float64) for k in case.inputs]
    with torch.no_grad():
        want = torch_reference(model, case)(*tensors).numpy()
    return relative_l2(got, want)


@pytest.mark.parametrize("per_channel", [False, True])
def test_forward_is_the_dequantized_lstm_up_to_rounding_x_and_h(
    tmp_path: Path, per_channel: bool
) -> None:
    """What the straight-through map leaves out: onnxruntime rounds X and h to uint8. With
    7-bit weights (reduce_range) that is all that separates it from the float LSTM (full
    range int8 weights on a CPU without VNNI also saturate its int16 pair sums: 0.09 to 0.19
    there, see docs/coverage.md)."""
    case = Case(True, True, per_channel=per_channel, reduce_range=True)
    model, _ = export_and_quantize(case, tmp_path)
    assert forward_gap(model, case) <= 2e-2


@pytest.mark.parametrize("runtime", runtimes.others())
@pytest.mark.parametrize(
    "name", ["bidirectional-states-per-channel", "forward-sequence-lens-per-channel"]
)
def test_runtimes_agree(quantized: Models, runtime: str, name: str) -> None:
    # OpenVINO's ONNX frontend reads com.microsoft DynamicQuantizeLSTM, which the explain
    # model keeps for its forward outputs.
    explain = build_explain_model(quantized[name], "vanilla", input_name="x", output_name="out")
    ref, other = runtimes.load(runtimes.REFERENCE, explain), runtimes.load(runtime, explain)
    case = CASES[name]
    for steps, batch in ((6, 3), (4, 1)):
        feeds = feeds_for(case, steps, batch, seed=5)
        d = 2 if case.bidirectional else 1
        seed = np.random.default_rng(0).standard_normal((steps + 1, batch, d * H))
        feeds["output_grad"] = seed.astype(np.float32)
        (a,) = ref(feeds, ["saliency"])
        (b,) = other(feeds, ["saliency"])
        assert relative_l2(b, a) <= 1e-5


def node_model(attrs: dict, w_computed: bool = False, peepholes: bool = False) -> onnx.ModelProto:
    """One DynamicQuantizeLSTM over x, hand-written, for the refusals."""
    rng = np.random.default_rng(0)
    consts = {
        "w": rng.integers(-64, 64, (1, IN, 4 * H)).astype(np.int8),
        "r": rng.integers(-64, 64, (1, H, 4 * H)).astype(np.int8),
        "ws": np.full(1, 0.01, np.float32), "wz": np.zeros(1, np.int8),
        "rs": np.full(1, 0.01, np.float32), "rz": np.zeros(1, np.int8),
        "p": np.zeros((1, 3 * H), np.float32),
    }  # fmt: skip
    nodes = []
    w = "w"
    if w_computed:
        nodes.append(helper.make_node("Neg", ["w"], ["w_neg"]))
        w = "w_neg"
    inputs = ["x", w, "r", "", "", "", "", "p" if peepholes else "", "ws", "wz", "rs", "rz"]
    nodes.append(
        helper.make_node(
            OP, inputs, ["y"], name="lstm", domain="com.microsoft", hidden_size=H, **attrs
        )
    )
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["T", 2, IN])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize("behind_relu", [False, True])
def test_a_node_without_declared_outputs_builds_and_runs(behind_relu: bool) -> None:
    # No shape for the op's output anywhere (onnx cannot infer one): the prepare pass
    # declares it, as a graph output's shape or as value_info of a tensor inside.
    model = node_model({})
    if behind_relu:
        model.graph.node[0].output[0] = "y_inside"
        model.graph.node.append(helper.make_node("Relu", ["y_inside"], ["y"]))
    explain = build_explain_model(model, "vanilla")
    x = np.random.default_rng(1).standard_normal((3, 2, IN)).astype(np.float32)
    (saliency,) = session(explain).run(
        ["saliency"], {"x": x, "output_grad": np.ones((3, 1, 2, H), np.float32)}
    )
    assert saliency.shape == x.shape and np.abs(saliency).max() > 0


@pytest.mark.parametrize(
    ("attrs", "kwargs", "message"),
    [
        ({"layout": 1}, {}, r"attribute\(s\) \['layout'\] unsupported"),
        ({"clip": 3.0}, {}, "attribute clip unsupported"),
        ({"input_forget": 1}, {}, "input_forget unsupported"),
        ({"activations": ["Tanh", "Tanh", "Tanh"]}, {}, "activations .* unsupported"),
        ({}, {"peepholes": True}, r"peepholes \(input P\) unsupported"),
        ({}, {"w_computed": True}, r"W \('w_neg'\) must be a constant"),
    ],
)
def test_what_it_does_not_support_is_refused_by_name(
    attrs: dict, kwargs: dict, message: str
) -> None:
    with pytest.raises(RewriteError, match=f"{OP} node 'lstm': {message}"):
        build_explain_model(node_model(attrs, **kwargs), "vanilla")


def test_the_rule_is_found_by_domain_and_op_type() -> None:
    model = node_model({})
    model.graph.node[0].domain = "com.example"  # the same op_type in another domain
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpsError, match=OP):
        build_explain_model(model, "vanilla")


def fake_quant(x: torch.Tensor) -> torch.Tensor:
    """DynamicQuantizeLinear and back (uint8 over [min(x, 0), max(x, 0)]), torch's
    straight-through gradient."""
    low, high = torch.clamp(x.detach().min(), max=0), torch.clamp(x.detach().max(), min=0)
    scale = float((high - low) / 255)
    zero = int(torch.clamp(torch.round(-low / scale), 0, 255))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def test_a_dynamically_quantized_crnn(tmp_path: Path) -> None:
    """conv -> BiLSTM -> linear (tests/test_crnn.py's), quantize_dynamic'd: ConvInteger,
    DynamicQuantizeLSTM and MatMulInteger. The reference runs the convolutions on fake
    quantized inputs (their ReLU and max-pool masks come from the quantized forward, as the
    explain model's do) and the LSTM and head as floats with the dequantized weights."""
    torch.manual_seed(7)
    net = CRNN().eval()
    torch.onnx.export(
        net, (torch.zeros(2, 1, HEIGHT, 12),), str(tmp_path / "crnn.onnx"), dynamo=False,
        input_names=["x"], output_names=["y"], opset_version=17,
        dynamic_axes={"x": {0: "N", 3: "W"}, "y": {0: "N", 1: "K"}},
    )  # fmt: skip
    quantize_dynamic(tmp_path / "crnn.onnx", tmp_path / "dynamic.onnx")
    model = onnx.load(tmp_path / "dynamic.onnx")
    ops = {n.op_type for n in model.graph.node}
    assert {"ConvInteger", OP, "MatMulInteger"} <= ops and "LSTM" not in ops
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def weight_of(node: onnx.NodeProto) -> torch.Tensor:
        w = consts[node.input[1]].astype(np.float32)
        zero = consts[node.input[3]].astype(np.float32) if node.input[3:] else 0.0
        stem = node.input[1].removesuffix("_quantized")
        return torch.from_numpy((w - zero) * consts[f"{stem}_scale"])

    convs = [weight_of(n) for n in model.graph.node if n.op_type == "ConvInteger"]
    (head,) = [weight_of(n) for n in model.graph.node if n.op_type == "MatMulInteger"]
    lstm = torch_reference(model, Case(bidirectional=True, states=False)).lstm.float()

    def reference(x: torch.Tensor) -> torch.Tensor:
        f = net.pool(
            torch.relu(
                torch.nn.functional.conv2d(fake_quant(x), convs[0], net.conv1.bias, padding=1)
            )
        )
        f = torch.relu(
            torch.nn.functional.conv2d(fake_quant(f), convs[1], net.conv2.bias, padding=1)
        )
        y = lstm(f.flatten(1, 2).permute(2, 0, 1))[0]
        out = y @ head + net.head.bias
        return out.permute(1, 0, 2).flatten(1)

    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y")
    run = session(explain)
    for n, width in ((2, 12), (3, 16)):
        rng = np.random.default_rng(width)
        x = rng.standard_normal((n, 1, HEIGHT, width)).astype(np.float32)
        seed = rng.standard_normal((n, (width // 2) * CLASSES)).astype(np.float32)
        (got,) = run.run(["saliency"], {"x": x, "output_grad": seed})
        xt = torch.from_numpy(x).requires_grad_(True)
        (want,) = torch.autograd.grad((reference(xt) * torch.from_numpy(seed)).sum(), xt)
        # 2e-7 here; 1e-4 leaves room for a conv input that torch's fake quantization
        # (x · 1/scale) and DynamicQuantizeLinear (x / scale) put one level apart.
        assert relative_l2(got, want.numpy()) <= 1e-4
