"""LSTM, GRU and RNN with sequence_lens against torch's float64 autograd on packed sequences.

The oracle is `torch.nn.utils.rnn.pack_padded_sequence(..., enforce_sorted=False)` through
nn.LSTM / nn.GRU / nn.RNN: torch's own handling of unequal lengths, written by no one here.
Each ONNX model is built by hand from the torch module's weights (gate blocks reordered
to ONNX's), with symbolic T and batch, and sequence_lens either a graph input or an int32
initializer. onnxruntime's forward Y, Y_h (Y_c) must first match torch's unpacked output,
which pins the weight conversion; then every output's saliency with respect to X and the
initial states must match torch's vector-Jacobian product.

Where torch has no counterpart (GRU's linear_before_reset=0; a length of 0, which its
packing refuses) central differences of onnxruntime's own node are the oracle. OpenVINO
must agree with onnxruntime on the bidirectional LSTM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxplain.graph_rewrite import build_explain_model

from helpers import runtimes
from helpers.fd import TOLERANCE, session, session_vjp_error, with_first_output

IN, H = 3, 4
# torch's gate blocks, in the order ONNX wants them: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n ->
# z,r,h (torch's n is ONNX's h with linear_before_reset=1); RNN has one block.
TORCH_TO_ONNX_BLOCKS = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}
# (T, lengths): a length equal to T and a length 1 in each; the initializer case keeps
# its lengths (they fix the batch) and runs them at a T longer than all of them too.
INPUT_SIZES = [(5, [5, 1, 3]), (4, [1, 4, 2, 3])]
INITIALIZER_LENS = [5, 1, 3]
INITIALIZER_SIZES = [(5, INITIALIZER_LENS), (7, INITIALIZER_LENS)]
DIRECTIONS = ["forward", "reverse", "bidirectional"]
OPS = ["LSTM", "GRU", "RNN"]


def _reorder(weight: torch.Tensor, op: str) -> np.ndarray:
    blocks = weight.detach().double().numpy().reshape(len(TORCH_TO_ONNX_BLOCKS[op]), H, -1)
    return blocks[TORCH_TO_ONNX_BLOCKS[op]].reshape(weight.shape).astype(np.float32)


def _state_names(op: str) -> list[str]:
    return ["h0", "c0"] if op == "LSTM" else ["h0"]


def _output_names(op: str) -> list[str]:
    return ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]


@dataclass
class Case:
    op: str
    direction: str
    net: torch.nn.Module  # float64
    model: onnx.ModelProto
    lens_as_input: bool

    @property
    def dirs(self) -> int:
        return 2 if self.direction == "bidirectional" else 1


def make_case(op: str, direction: str, lens_as_input: bool, seed: int = 3) -> Case:
    """The torch module (float64) and its ONNX node: X [T, N, IN], h0 (c0) [D, N, H]."""
    torch.manual_seed(seed)
    kwargs = {"nonlinearity": "tanh"} if op == "RNN" else {}
    # ONNX's reverse direction is the reverse half of torch's bidirectional layer.
    bidirectional = direction != "forward"
    net = getattr(torch.nn, op)(IN, H, bidirectional=bidirectional, **kwargs).double()
    suffixes = {"forward": [""], "reverse": ["_reverse"], "bidirectional": ["", "_reverse"]}
    ws, rs, bs = [], [], []
    for sfx in suffixes[direction]:
        ws.append(_reorder(getattr(net, f"weight_ih_l0{sfx}"), op))
        rs.append(_reorder(getattr(net, f"weight_hh_l0{sfx}"), op))
        bs.append(
            np.concatenate(
                [_reorder(getattr(net, f"bias_ih_l0{sfx}"), op),
                 _reorder(getattr(net, f"bias_hh_l0{sfx}"), op)]
            )
        )  # fmt: skip
    d = len(ws)
    inits = [numpy_helper.from_array(np.stack(a), n) for a, n in ((ws, "w"), (rs, "r"), (bs, "b"))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", IN])]
    if lens_as_input:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"]))
    else:
        inits.append(numpy_helper.from_array(np.asarray(INITIALIZER_LENS, np.int32), "lens"))
    for s in _state_names(op):
        inputs.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, [d, "N", H]))
    attrs: dict = {"hidden_size": H, "direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = 1  # torch's GRU: r multiplies (R_h h + b_Rh)
    outputs = _output_names(op)
    node = helper.make_node(
        op, ["x", "w", "r", "b", "lens", *_state_names(op)], outputs, name=f"{op}_seqlens",
        **attrs,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], f"{op}_seqlens", inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return Case(op, direction, net, onnx.shape_inference.infer_shapes(model), lens_as_input)


def torch_outputs(case: Case, feeds: dict) -> dict[str, torch.Tensor]:
    """torch's Y [T, D, N, H] (0 where padded), Y_h (Y_c) [D, N, H], of float64 leaves in
    `feeds`: X and the states, as ONNX lays them out."""
    x, lens = feeds["x"], torch.as_tensor(feeds["lens"], dtype=torch.int64)
    h0 = feeds["h0"]
    if case.direction == "reverse":
        # The module is bidirectional; its forward half gets a state it ignores here.
        h0 = torch.cat([torch.zeros_like(h0), h0])
    hx: object = h0
    if case.op == "LSTM":
        c0 = feeds["c0"]
        hx = (h0, torch.cat([torch.zeros_like(c0), c0]) if case.direction == "reverse" else c0)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, enforce_sorted=False)
    out, state = case.net(packed, hx)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
    t, n = x.shape[:2]
    y = y.reshape(t, n, -1, H).permute(0, 2, 1, 3)  # [T, N, D·H] -> [T, D, N, H]
    finals = list(state) if case.op == "LSTM" else [state]
    if case.direction == "reverse":
        y, finals = y[:, 1:], [f[1:] for f in finals]
    return dict(zip(_output_names(case.op), [y, *finals], strict=True))


def feeds_at(case: Case, t: int, lens: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(lens)
    feeds = {"x": rng.standard_normal((t, n, IN)).astype(np.float32)}
    if case.lens_as_input:
        feeds["lens"] = np.asarray(lens, np.int32)
    for s in _state_names(case.op):
        feeds[s] = (0.5 * rng.standard_normal((case.dirs, n, H))).astype(np.float32)
    return feeds


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def forward_errors(case: Case, feeds: dict, lens: list[int]) -> dict[str, float]:
    """onnxruntime's outputs against torch's, relative L2, per output."""
    ours = dict(zip(_output_names(case.op), session(case.model).run(None, feeds), strict=True))
    leaves = {k: torch.tensor(v, dtype=torch.float64) for k, v in feeds.items() if k != "lens"}
    with torch.no_grad():
        ref = torch_outputs(case, {**leaves, "lens": lens})
    return {k: relative(ours[k], ref[k].numpy()) for k in ours}


def saliency_errors(case: Case, feeds: dict, lens: list[int]) -> dict[tuple[str, str], float]:
    """For every (output, differentiated input): our saliency on onnxruntime against torch's
    float64 vector-Jacobian product, relative L2. The seed is random on all of Y, padded
    steps too: there Y is a constant 0 in both, so their seed must reach nothing."""
    rng = np.random.default_rng(1)
    errors = {}
    for wrt in ["x", *_state_names(case.op)]:
        leaves = {
            k: torch.tensor(v, dtype=torch.float64, requires_grad=k == wrt)
            for k, v in feeds.items()
            if k != "lens"
        }
        outs = torch_outputs(case, {**leaves, "lens": lens})
        for name, out in outs.items():
            u = rng.standard_normal(tuple(out.shape)).astype(np.float32)
            (expected,) = torch.autograd.grad(
                out, leaves[wrt], torch.tensor(u, dtype=out.dtype), retain_graph=True
            )
            explain = build_explain_model(case.model, "vanilla", input_name=wrt, output_name=name)
            (saliency,) = session(explain).run(["saliency"], {**feeds, "output_grad": u})
            if wrt == "x":
                for b, length in enumerate(lens):
                    # A masked step's gates get exactly 0, so X there gets exactly 0.
                    assert not saliency[length:, b].any(), (name, b)
            errors[(name, wrt)] = relative(saliency, expected.numpy())
    return errors


TOL = 1e-5


@pytest.mark.parametrize("lens_as_input", [True, False], ids=["lens-input", "lens-initializer"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", OPS)
def test_sequence_lens_match_torch_packed(op: str, direction: str, lens_as_input: bool) -> None:
    case = make_case(op, direction, lens_as_input)
    for t, lens in INPUT_SIZES if lens_as_input else INITIALIZER_SIZES:
        feeds = feeds_at(case, t, lens)
        fwd = forward_errors(case, feeds, lens)
        assert max(fwd.values()) <= TOL, ("forward", t, lens, fwd)
        grads = saliency_errors(case, feeds, lens)
        assert max(grads.values()) <= TOL, ("saliency", t, lens, grads)


def random_model(op: str, direction: str, attrs: dict, seed: int) -> onnx.ModelProto:
    """`op` with random weights over x, lens (int32, a graph input) and the states."""
    rng = np.random.default_rng(seed)
    d, gates = (2 if direction == "bidirectional" else 1), len(TORCH_TO_ONNX_BLOCKS[op])
    inits = {
        "w": (0.5 * rng.standard_normal((d, gates * H, IN))).astype(np.float32),
        "r": (0.5 * rng.standard_normal((d, gates * H, H))).astype(np.float32),
        "b": (0.3 * rng.standard_normal((d, 2 * gates * H))).astype(np.float32),
    }
    states, outputs = _state_names(op), _output_names(op)
    node = helper.make_node(
        op, ["x", "w", "r", "b", "lens", *states], outputs, hidden_size=H, direction=direction,
        **attrs,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], f"{op}_random",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", IN]),
         helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"]),
         *(helper.make_tensor_value_info(s, TensorProto.FLOAT, [d, "N", H]) for s in states)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def fd_errors(
    model: onnx.ModelProto, op: str, dirs: int, sizes: list[tuple[int, list[int]]], seed: int
) -> dict[tuple[str, str, int], float]:
    """Every (output, wrt, size) against central differences of onnxruntime's forward node
    in float32 (it has no float64 recurrent ops; Richardson-extrapolated, as helpers/fd.py
    does), built once for symbolic T and batch."""
    rng = np.random.default_rng(seed)
    feeds_per_size = [
        {"x": rng.standard_normal((t, len(lens), IN)).astype(np.float32),
         "lens": np.asarray(lens, np.int32),
         **{s: rng.standard_normal((dirs, len(lens), H)).astype(np.float32)
            for s in _state_names(op)}}
        for t, lens in sizes
    ]  # fmt: skip
    errors = {}
    for output in _output_names(op):
        fwd = session(with_first_output(model, output))
        for wrt in ["x", *_state_names(op)]:
            explain = build_explain_model(model, "vanilla", input_name=wrt, output_name=output)
            exp = session(explain)
            for i, feeds in enumerate(feeds_per_size):
                err = session_vjp_error(fwd, exp, feeds, wrt, np.float32, 1e-2, 3, seed=0)
                errors[(output, wrt, i)] = err
    return errors


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gru_linear_before_reset_0_with_sequence_lens(direction: str) -> None:
    """torch has no GRU with linear_before_reset=0: onnxruntime's forward node is the
    oracle here, by central differences."""
    model = random_model("GRU", direction, {"linear_before_reset": 0}, seed=4)
    dirs = 2 if direction == "bidirectional" else 1
    errors = fd_errors(model, "GRU", dirs, INPUT_SIZES, seed=4)
    assert max(errors.values()) < TOLERANCE[np.float32], errors


@pytest.mark.parametrize("op", OPS)
def test_length_zero(op: str) -> None:
    """An item of length 0 (torch's packing refuses one): onnxruntime gives it Y, Y_h (Y_c)
    all 0, so neither X nor its initial states get any gradient; central differences of
    onnxruntime's node again."""
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    model = random_model(op, "bidirectional", attrs, seed=7)
    errors = fd_errors(model, op, 2, [(4, [3, 0, 2]), (3, [0, 3])], seed=7)
    assert max(errors.values()) < TOLERANCE[np.float32], errors


def test_no_mask_without_sequence_lens() -> None:
    """An absent or empty input 4 leaves the backward pass as it was: no mask ops."""
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array((0.5 * rng.standard_normal((1, 4 * H, IN))).astype(np.float32), "w")
    r = numpy_helper.from_array((0.5 * rng.standard_normal((1, 4 * H, H))).astype(np.float32), "r")
    for inputs in (["x", "w", "r"], ["x", "w", "r", "", "", "h0"]):
        node = helper.make_node("LSTM", inputs, ["y0"], hidden_size=H)
        graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, IN])]
        if "h0" in inputs:
            graph_inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 2, H]))
        graph = helper.make_graph(
            [node], "lstm", graph_inputs,
            [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None)], [w, r],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
        ops = {n.op_type for n in explain.graph.node}
        assert "Scan" in ops and not ops & {"Range", "Less"}, sorted(ops)
        for scan in (n for n in explain.graph.node if n.op_type == "Scan"):
            body = helper.get_attribute_value(next(a for a in scan.attribute if a.name == "body"))
            assert not any("m_t" in i.name for i in body.input), scan.name


@pytest.mark.parametrize("runtime", runtimes.others())
def test_lstm_sequence_lens_agree_across_runtimes(runtime: str) -> None:
    """The bidirectional LSTM with sequence_lens and states, at two lengths and batches."""
    case = make_case("LSTM", "bidirectional", lens_as_input=True)
    explain = build_explain_model(case.model, "vanilla", input_name="x", output_name="Y")
    ref, other = runtimes.load(runtimes.REFERENCE, explain), runtimes.load(runtime, explain)
    rng = np.random.default_rng(6)
    for t, lens in INPUT_SIZES:
        feeds = {
            **feeds_at(case, t, lens),
            "output_grad": rng.standard_normal((t, 2, len(lens), H)).astype(np.float32),
        }
        (a,) = ref(feeds, ["saliency"])
        (b,) = other(feeds, ["saliency"])
        assert a.shape == (t, len(lens), IN)
        assert np.linalg.norm(b - a) <= 1e-5 * np.linalg.norm(a), relative(b, a)
