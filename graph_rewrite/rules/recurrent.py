"""LSTM: backward through time as two ONNX Scans, so no sequence length is baked in.

The forward node's outputs give neither the cell states nor the gates, so a first Scan
recomputes them step by step from X, the weights and the initial states; a second Scan
runs back through time carrying (dh, dc) and emits each step's pre-activation gradient.
dX is then one MatMul of those gradients with W for all steps at once. A reverse
direction is the same pair of Scans with their scan directions flipped, so every
tensor stays in the original time order. Weights are constants: no gradient for them.

sequence_lens (input 4) becomes a 0/1 mask m[t, b] = (t < L[b]) scanned alongside the
steps: a masked step passes the state through unchanged (h = m·h_new + (1-m)·h_prev), so
the reverse direction, which meets the padded steps first, starts from h0 at step L-1 as
onnxruntime's does; going back, a masked step passes the gradient through and adds none
from Y, which onnxruntime fills with the constant 0 there. An item of length 0 has every
output 0 in onnxruntime, so its initial states get no gradient either. Masks multiply (no
Where, no If), which OpenVINO runs as well; the price is that padded steps of X must be
finite: 0·NaN is NaN, where onnxruntime's forward never reads them. Without sequence_lens
no mask op is emitted at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..builder import Builder, Node
from ..errors import RewriteError
from .table import Grad, register

_DEFAULT_LSTM_ACTS = ["Sigmoid", "Tanh", "Tanh"]


class _Body:
    """Nodes of one Scan body; names come from the outer builder so none collide."""

    def __init__(self, g: Builder, elem: int) -> None:
        self.g, self.elem = g, elem
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []

    def input(self, hint: str) -> str:
        name = self.g.fresh(hint)
        self.inputs.append(helper.make_tensor_value_info(name, self.elem, None))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        out = self.g.fresh(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [out], name=self.g.fresh(op_type), **attrs)
        )
        return out

    def const(self, value: np.ndarray) -> str:
        """A Constant node inside the body: OpenVINO's Scan reads no outer-scope names."""
        out = self.g.fresh("body_const")
        tensor = numpy_helper.from_array(np.asarray(value), out)
        self.nodes.append(helper.make_node("Constant", [], [out], value=tensor))
        return out

    def split4(self, x: str, hidden: int) -> list[str]:
        """The four gates of [B, 4H] (Split's sizes input: opset 13 and later)."""
        outs = [self.g.fresh("gate") for _ in range(4)]
        sizes = self.const(np.asarray([hidden] * 4, dtype=np.int64))
        self.nodes.append(
            helper.make_node("Split", [x, sizes], outs, name=self.g.fresh("Split"), axis=-1)
        )
        return outs

    def graph(self, outputs: Sequence[str]) -> onnx.GraphProto:
        return helper.make_graph(
            self.nodes,
            self.g.fresh("scan_body"),
            self.inputs,
            [helper.make_tensor_value_info(o, self.elem, None) for o in outputs],
        )


def _refuse_unsupported(node: Node, defaults: list[str]) -> None:
    acts = node.attr("activations")
    if acts is not None:
        names = [a.decode() if isinstance(a, bytes) else str(a) for a in acts]
        n_dirs = (
            2 if node.attr("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
        )
        if names != defaults * n_dirs:
            raise RewriteError(
                f"{node.op_type} node {node.name!r}: activations {names} unsupported"
            )
    for attr in ("clip", "activation_alpha", "activation_beta"):
        if node.attr(attr) is not None:
            raise RewriteError(f"{node.op_type} node {node.name!r}: attribute {attr} unsupported")
    if int(node.attr("input_forget", 0)):
        raise RewriteError(f"{node.op_type} node {node.name!r}: input_forget unsupported")
    if int(node.attr("layout", 0)):
        # onnxruntime runs no layout=1 recurrent op, so nothing here could check its backward.
        raise RewriteError(f"{node.op_type} node {node.name!r}: layout=1 unsupported")


def _direction_names(node: Node) -> list[str]:
    d = node.attr("direction", b"forward")
    d = d.decode() if isinstance(d, bytes) else str(d)
    return ["forward", "reverse"] if d == "bidirectional" else [d]


def _optional(node: Node, i: int) -> str:
    return node.inputs[i] if len(node.inputs) > i else ""


# (m, 1 - m), each [T, B, 1] in X's float type; empty where the node has no sequence_lens.
Masks = tuple[str, ...]


def _step_masks(g: Builder, x: str, seq_lens: str) -> Masks:
    """m[t, b] = float(t < L[b]) and 1 - m, for T and B read from X at run time.

    Both go into every Scan as scan inputs (the complement too, so that no body needs a
    constant 1 for it); one pair serves both directions and both Scans of each.
    """
    if not seq_lens:
        return ()
    steps = g.Gather(g.shape_of(x), g.ints(0), axis=0)  # T, a scalar
    t = g.Unsqueeze(g.Range(g.ints(0), steps, g.ints(1)), g.ints([1]))  # [T, 1]
    lens = g.Unsqueeze(g.Cast(seq_lens, to=onnx.TensorProto.INT64), g.ints([0]))  # [1, B]
    elem = helper.np_dtype_to_tensor_dtype(g.dtype_of(x))
    m = g.Unsqueeze(g.Cast(g.Less(t, lens), to=elem), g.ints([2]))
    return m, g.Sub(g.scalar_like(1.0, x), m)


def _started(g: Builder, masks: Masks) -> str:
    """float(L[b] > 0), [B, 1]: m at t = 0. onnxruntime's Y_h (Y_c) of an item of length 0
    is 0, not h0 (c0), so no gradient reaches that item's initial state."""
    return g.Gather(masks[0], g.ints(0), axis=0)


def _mask_inputs(body: _Body, masks: Masks) -> tuple[str, str] | None:
    """The body's inputs for one step's (m, 1 - m), [B, 1]; None without sequence_lens."""
    if not masks:
        return None
    return body.input("m_t"), body.input("om_t")


def _blend(body: _Body, mask: tuple[str, str], new: str, old: str) -> str:
    """m·new + (1-m)·old: exactly `new` or `old`, as m is 0 or 1 (old + m·(new-old) would
    round)."""
    m, om = mask
    return body.op("Add", body.op("Mul", m, new), body.op("Mul", om, old))


@register("LSTM")
def lstm(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """Gate order i, o, f, c (ONNX); c_t = f·c_{t-1} + i·g, h_t = o·tanh(c_t)."""
    _refuse_unsupported(node, _DEFAULT_LSTM_ACTS)
    if _optional(node, 7):
        raise RewriteError(f"LSTM node {node.name!r}: peepholes (input P) unsupported")
    x, w, r = node.input(0), node.input(1), node.input(2)
    bias, h0_all, c0_all = _optional(node, 3), _optional(node, 5), _optional(node, 6)
    hidden = int(node.attr("hidden_size"))
    elem = helper.np_dtype_to_tensor_dtype(g.dtype_of(x))
    dy = dys[0] if len(dys) > 0 else None
    dyh = dys[1] if len(dys) > 1 else None
    dyc = dys[2] if len(dys) > 2 else None
    # [B, H] zeros for missing states and missing upstream gradients.
    x_shape = g.Shape(x)
    bh = g.Concat(g.Slice(x_shape, g.ints([1]), g.ints([2])), g.ints([hidden]), axis=0)
    zeros_bh = g.Expand(g.scalar_like(0.0, x), bh)
    masks = _step_masks(g, x, _optional(node, 4))
    started = _started(g, masks) if masks and (h0_all or c0_all) else ""
    dx_total: Grad = None
    dh0s, dc0s = [], []
    for d, direction in enumerate(_direction_names(node)):
        idx = g.ints([d])
        w_d = g.Squeeze(g.Gather(w, idx, axis=0), g.ints([0]))  # [4H, I]
        r_d = g.Squeeze(g.Gather(r, idx, axis=0), g.ints([0]))  # [4H, H]
        h0 = g.Squeeze(g.Gather(h0_all, idx, axis=0), g.ints([0])) if h0_all else zeros_bh
        c0 = g.Squeeze(g.Gather(c0_all, idx, axis=0), g.ints([0])) if c0_all else zeros_bh
        # Input projection of every step at once, biases folded in: [T, B, 4H].
        xw = g.MatMul(x, g.Transpose(w_d, perm=[1, 0]))
        if bias:
            b_d = g.Squeeze(g.Gather(bias, idx, axis=0), g.ints([0]))
            wb, rb = g.op_multi("Split", [b_d, g.ints([4 * hidden] * 2)], 2, axis=0)
            xw = g.Add(xw, g.Add(wb, rb))
        rev = 1 if direction == "reverse" else 0
        acts, c_prev, c_t = _lstm_recompute(g, elem, hidden, xw, r_d, h0, c0, rev, masks)
        zero = g.scalar_like(0.0, x)
        dy_d = g.Squeeze(g.Gather(dy, idx, axis=1), g.ints([1])) if dy else g.Mul(c_t, zero)
        dh_init = g.Squeeze(g.Gather(dyh, idx, axis=0), g.ints([0])) if dyh else zeros_bh
        dc_init = g.Squeeze(g.Gather(dyc, idx, axis=0), g.ints([0])) if dyc else zeros_bh
        dh0, dc0, dpre = _lstm_backward(
            g, elem, hidden, r_d, dh_init, dc_init, dy_d, acts, c_prev, c_t, rev, masks
        )
        dx_d = g.MatMul(dpre, w_d)  # [T, B, I]
        dx_total = dx_d if dx_total is None else g.Add(dx_total, dx_d)
        if started:
            dh0, dc0 = g.Mul(dh0, started), g.Mul(dc0, started)
        dh0s.append(g.Unsqueeze(dh0, g.ints([0])))
        dc0s.append(g.Unsqueeze(dc0, g.ints([0])))
    grads: list[Grad] = [None] * len(node.inputs)
    grads[0] = dx_total if wants[0] else None
    if h0_all and wants[5]:
        grads[5] = dh0s[0] if len(dh0s) == 1 else g.Concat(*dh0s, axis=0)
    if c0_all and len(wants) > 6 and wants[6]:
        grads[6] = dc0s[0] if len(dc0s) == 1 else g.Concat(*dc0s, axis=0)
    return grads


def _lstm_recompute(
    g: Builder, elem: int, hidden: int, xw: str, r: str, h0: str, c0: str, reverse: int,
    masks: Masks = (),
) -> tuple[str, str, str]:  # fmt: skip
    """Scan 1: the activated gates [T,B,4H], c_{t-1} and c_t for every step, in time order."""
    body = _Body(g, elem)
    # R rides along as an unchanged state: OpenVINO's Scan reads no outer-scope names.
    h, c, r_t, xw_t = body.input("h"), body.input("c"), body.input("r_t"), body.input("xw_t")
    mask = _mask_inputs(body, masks)
    pre = body.op("Add", xw_t, body.op("MatMul", h, r_t))
    pi, po, pf, pc = body.split4(pre, hidden)
    i, o, f = body.op("Sigmoid", pi), body.op("Sigmoid", po), body.op("Sigmoid", pf)
    gg = body.op("Tanh", pc)
    c_new = body.op("Add", body.op("Mul", f, c), body.op("Mul", i, gg))
    h_new = body.op("Mul", o, body.op("Tanh", c_new))
    acts = body.op("Concat", i, o, f, gg, axis=-1)
    c_prev_out = body.op("Identity", c)
    c_out = body.op("Identity", c_new)
    # c_t stays the cell's own c_new: where m = 1 it is the state, where m = 0 the
    # backward Scan multiplies whatever was computed from it by 0.
    h_state = _blend(body, mask, h_new, h) if mask else h_new
    c_state = _blend(body, mask, c_new, c) if mask else c_new
    graph = body.graph([h_state, c_state, body.op("Identity", r_t), acts, c_prev_out, c_out])
    n_scan = 1 + len(masks)
    outs = g.op_multi(
        "Scan", [h0, c0, g.Transpose(r, perm=[1, 0]), xw, *masks], 6, body=graph,
        num_scan_inputs=n_scan, scan_input_directions=[reverse] * n_scan,
        scan_output_directions=[reverse] * 3,
    )  # fmt: skip
    return outs[3], outs[4], outs[5]


def _lstm_backward(
    g: Builder, elem: int, hidden: int, r: str, dh_init: str, dc_init: str, dy: str,
    acts: str, c_prev: str, c_t: str, reverse: int, masks: Masks = (),
) -> tuple[str, str, str]:  # fmt: skip
    """Scan 2, against time: carries (dh, dc), emits d(pre-activation gates) per step.

    With masks, the cell's backward (linear in the incoming dh, dc) gets m·dh and m·dc, so
    a masked step emits 0 for its gates; dh_{t-1} and dc_{t-1} then add (1-m)·dh_next and
    (1-m)·dc_next, the pass-through without dy_t (Y is the constant 0 at a masked step).
    """
    body = _Body(g, elem)
    dh_next, dc_next, r_in = body.input("dh"), body.input("dc"), body.input("r")
    dy_t, a_t, cp_t, cc_t = (
        body.input("dy_t"),
        body.input("a_t"),
        body.input("cp"),
        body.input("ct"),
    )
    mask = _mask_inputs(body, masks)
    one = body.const(np.asarray(1.0, dtype=helper.tensor_dtype_to_np_dtype(elem)))
    i, o, f, gg = body.split4(a_t, hidden)
    dh = body.op("Add", dy_t, dh_next)
    dc_in = dc_next
    if mask:
        dh, dc_in = body.op("Mul", mask[0], dh), body.op("Mul", mask[0], dc_next)
    tc = body.op("Tanh", cc_t)
    do = body.op("Mul", dh, tc)
    dtanh = body.op("Sub", one, body.op("Mul", tc, tc))
    dc = body.op("Add", dc_in, body.op("Mul", body.op("Mul", dh, o), dtanh))
    di, dgg, df = body.op("Mul", dc, gg), body.op("Mul", dc, i), body.op("Mul", dc, cp_t)
    dc_prev = body.op("Mul", dc, f)

    def dsig(grad: str, s: str) -> str:
        return body.op("Mul", grad, body.op("Mul", s, body.op("Sub", one, s)))

    dpg = body.op("Mul", dgg, body.op("Sub", one, body.op("Mul", gg, gg)))
    dpre = body.op("Concat", dsig(di, i), dsig(do, o), dsig(df, f), dpg, axis=-1)
    dh_prev = body.op("MatMul", dpre, r_in)
    if mask:
        dh_prev = body.op("Add", dh_prev, body.op("Mul", mask[1], dh_next))
        dc_prev = body.op("Add", dc_prev, body.op("Mul", mask[1], dc_next))
    dpre_out = body.op("Identity", dpre)
    graph = body.graph([dh_prev, dc_prev, body.op("Identity", r_in), dpre_out])
    back = 1 - reverse
    n_scan = 4 + len(masks)
    outs = g.op_multi(
        "Scan", [dh_init, dc_init, r, dy, acts, c_prev, c_t, *masks], 4, body=graph,
        num_scan_inputs=n_scan, scan_input_directions=[back] * n_scan,
        scan_output_directions=[back],
    )  # fmt: skip
    return outs[0], outs[1], outs[3]


def _pick(g: Builder, tensor: str, d: int, axis: int = 0) -> str:
    """Direction `d` of a [D, ...] tensor (or of Y's [T, D, B, H] along axis 1)."""
    return g.Squeeze(g.Gather(tensor, g.ints([d]), axis=axis), g.ints([axis]))


def _stack(g: Builder, parts: list[str]) -> str:
    unsqueezed = [g.Unsqueeze(p, g.ints([0])) for p in parts]
    return unsqueezed[0] if len(unsqueezed) == 1 else g.Concat(*unsqueezed, axis=0)


@register("GRU", "RNN")
def gru_or_rnn(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """GRU (gates z, r, h; both linear_before_reset forms) and the plain Tanh RNN."""
    is_gru = node.op_type == "GRU"
    _refuse_unsupported(node, ["Sigmoid", "Tanh"] if is_gru else ["Tanh"])
    x, w, r = node.input(0), node.input(1), node.input(2)
    bias, h0_all = _optional(node, 3), _optional(node, 5)
    hidden = int(node.attr("hidden_size"))
    n_gates = 3 if is_gru else 1
    lbr = int(node.attr("linear_before_reset", 0)) if is_gru else 0
    elem = helper.np_dtype_to_tensor_dtype(g.dtype_of(x))
    dy = dys[0] if len(dys) > 0 else None
    dyh = dys[1] if len(dys) > 1 else None
    bh = g.Concat(g.Slice(g.Shape(x), g.ints([1]), g.ints([2])), g.ints([hidden]), axis=0)
    zeros_bh = g.Expand(g.scalar_like(0.0, x), bh)
    masks = _step_masks(g, x, _optional(node, 4))
    started = _started(g, masks) if masks and h0_all else ""
    dx_total: Grad = None
    dh0s = []
    for d, direction in enumerate(_direction_names(node)):
        w_d, r_d = _pick(g, w, d), _pick(g, r, d)
        h0 = _pick(g, h0_all, d) if h0_all else zeros_bh
        xw = g.MatMul(x, g.Transpose(w_d, perm=[1, 0]))  # [T, B, G·H]
        rb = g.Expand(g.scalar_like(0.0, x), g.ints([n_gates * hidden]))
        if bias:
            wb, rb = g.op_multi("Split", [_pick(g, bias, d), g.ints([n_gates * hidden] * 2)], 2)
            xw = g.Add(xw, wb)
        rev = 1 if direction == "reverse" else 0
        if is_gru:
            acts, h_prev = _gru_recompute(g, elem, hidden, lbr, xw, r_d, rb, h0, rev, masks)
        else:
            xw = g.Add(xw, rb)
            acts, h_prev = _rnn_recompute(g, elem, xw, r_d, h0, rev, masks)
        zero = g.scalar_like(0.0, x)
        dy_d = _pick(g, dy, d, axis=1) if dy else g.Mul(h_prev, zero)
        dh_init = _pick(g, dyh, d) if dyh else zeros_bh
        if is_gru:
            dh0, dpre = _gru_backward(
                g, elem, hidden, lbr, r_d, dh_init, dy_d, acts, h_prev, rev, masks
            )
        else:
            dh0, dpre = _rnn_backward(g, elem, r_d, dh_init, dy_d, acts, rev, masks)
        dx_d = g.MatMul(dpre, w_d)
        dx_total = dx_d if dx_total is None else g.Add(dx_total, dx_d)
        dh0s.append(g.Mul(dh0, started) if started else dh0)
    grads: list[Grad] = [None] * len(node.inputs)
    grads[0] = dx_total if wants[0] else None
    if h0_all and wants[5]:
        grads[5] = _stack(g, dh0s)
    return grads


def _rnn_recompute(
    g: Builder, elem: int, xw: str, r: str, h0: str, reverse: int, masks: Masks = ()
) -> tuple[str, str]:
    """The cell's h_t and h_{t-1} of every step, in time order."""
    body = _Body(g, elem)
    h, r_t, xw_t = body.input("h"), body.input("r_t"), body.input("xw_t")
    mask = _mask_inputs(body, masks)
    h_new = body.op("Tanh", body.op("Add", xw_t, body.op("MatMul", h, r_t)))
    h_state = _blend(body, mask, h_new, h) if mask else h_new
    graph = body.graph([h_state, body.op("Identity", r_t), body.op("Identity", h_new),
                        body.op("Identity", h)])  # fmt: skip
    n_scan = 1 + len(masks)
    outs = g.op_multi(
        "Scan", [h0, g.Transpose(r, perm=[1, 0]), xw, *masks], 4, body=graph,
        num_scan_inputs=n_scan, scan_input_directions=[reverse] * n_scan,
        scan_output_directions=[reverse] * 2,
    )  # fmt: skip
    return outs[2], outs[3]


def _rnn_backward(
    g: Builder, elem: int, r: str, dh_init: str, dy: str, h_t: str, reverse: int,
    masks: Masks = (),
) -> tuple[str, str]:  # fmt: skip
    """Against time, carrying dh; masked as _lstm_backward is."""
    body = _Body(g, elem)
    dh_next, r_in = body.input("dh"), body.input("r")
    dy_t, h_cur = body.input("dy_t"), body.input("h_t")
    mask = _mask_inputs(body, masks)
    one = body.const(np.asarray(1.0, dtype=helper.tensor_dtype_to_np_dtype(elem)))
    dh = body.op("Add", dy_t, dh_next)
    if mask:
        dh = body.op("Mul", mask[0], dh)
    dpre = body.op("Mul", dh, body.op("Sub", one, body.op("Mul", h_cur, h_cur)))
    dh_prev = body.op("MatMul", dpre, r_in)
    if mask:
        dh_prev = body.op("Add", dh_prev, body.op("Mul", mask[1], dh_next))
    graph = body.graph([dh_prev, body.op("Identity", r_in), body.op("Identity", dpre)])
    back = 1 - reverse
    n_scan = 2 + len(masks)
    outs = g.op_multi(
        "Scan", [dh_init, r, dy, h_t, *masks], 3, body=graph, num_scan_inputs=n_scan,
        scan_input_directions=[back] * n_scan, scan_output_directions=[back],
    )  # fmt: skip
    return outs[0], outs[2]


def _gru_recompute(
    g: Builder, elem: int, hidden: int, lbr: int, xw: str, r: str, rb: str, h0: str,
    reverse: int, masks: Masks = (),
) -> tuple[str, str]:  # fmt: skip
    """Per step concat(z, r, h̃, q), q being the reset-gated term with Rbh, and h_{t-1}."""
    body = _Body(g, elem)
    h, r_t, rb_in, xw_t = body.input("h"), body.input("r_t"), body.input("rb"), body.input("xw_t")
    mask = _mask_inputs(body, masks)
    sizes = body.const(np.asarray([hidden] * 3, dtype=np.int64))
    xz, xr, xh = _split(body, xw_t, sizes, 3, axis=-1)
    rz_t, rr_t, rh_t = _split(body, r_t, sizes, 3, axis=-1)  # R transposed: [H, 3H]
    bz, br, bhh = _split(body, rb_in, sizes, 3, axis=0)
    z = body.op("Sigmoid", body.op("Add", xz, body.op("Add", body.op("MatMul", h, rz_t), bz)))
    rg = body.op("Sigmoid", body.op("Add", xr, body.op("Add", body.op("MatMul", h, rr_t), br)))
    if lbr:
        q = body.op("Add", body.op("MatMul", h, rh_t), bhh)
        pre_h = body.op("Add", xh, body.op("Mul", rg, q))
    else:
        q = body.op("Add", body.op("MatMul", body.op("Mul", rg, h), rh_t), bhh)
        pre_h = body.op("Add", xh, q)
    hh = body.op("Tanh", pre_h)
    # h = (1 - z)·h̃ + z·h_{t-1} = h̃ + z·(h_{t-1} - h̃)
    h_new = body.op("Add", hh, body.op("Mul", z, body.op("Sub", h, hh)))
    acts = body.op("Concat", z, rg, hh, q, axis=-1)
    h_state = _blend(body, mask, h_new, h) if mask else h_new
    graph = body.graph([h_state, body.op("Identity", r_t), body.op("Identity", rb_in), acts,
                        body.op("Identity", h)])  # fmt: skip
    n_scan = 1 + len(masks)
    outs = g.op_multi(
        "Scan", [h0, g.Transpose(r, perm=[1, 0]), rb, xw, *masks], 5, body=graph,
        num_scan_inputs=n_scan, scan_input_directions=[reverse] * n_scan,
        scan_output_directions=[reverse] * 2,
    )  # fmt: skip
    return outs[3], outs[4]


def _split(body: _Body, x: str, sizes: str, n: int, axis: int) -> list[str]:
    outs = [body.g.fresh("part") for _ in range(n)]
    body.nodes.append(
        helper.make_node("Split", [x, sizes], outs, name=body.g.fresh("Split"), axis=axis)
    )
    return outs


def _gru_backward(
    g: Builder, elem: int, hidden: int, lbr: int, r: str, dh_init: str, dy: str,
    acts: str, h_prev: str, reverse: int, masks: Masks = (),
) -> tuple[str, str]:  # fmt: skip
    """Against time, carrying dh; masked as _lstm_backward is."""
    body = _Body(g, elem)
    dh_next, r_in = body.input("dh"), body.input("r")
    dy_t, a_t, hp = body.input("dy_t"), body.input("a_t"), body.input("hp")
    mask = _mask_inputs(body, masks)
    one = body.const(np.asarray(1.0, dtype=helper.tensor_dtype_to_np_dtype(elem)))
    z, rg, hh, q = _split(body, a_t, body.const(np.asarray([hidden] * 4, np.int64)), 4, -1)
    r_zr, r_h = _split(body, r_in, body.const(np.asarray([2 * hidden, hidden], np.int64)), 2, 0)
    dh = body.op("Add", dy_t, dh_next)
    if mask:
        dh = body.op("Mul", mask[0], dh)
    dz = body.op("Mul", dh, body.op("Sub", hp, hh))
    d_pre_h = body.op(
        "Mul", body.op("Mul", dh, body.op("Sub", one, z)),
        body.op("Sub", one, body.op("Mul", hh, hh)),
    )  # fmt: skip
    if lbr:
        dr = body.op("Mul", d_pre_h, q)
        dh_prev = body.op("MatMul", body.op("Mul", d_pre_h, rg), r_h)
    else:
        d_rh = body.op("MatMul", d_pre_h, r_h)  # gradient of r·h_{t-1}
        dr = body.op("Mul", d_rh, hp)
        dh_prev = body.op("Mul", d_rh, rg)

    def dsig(grad: str, s: str) -> str:
        return body.op("Mul", grad, body.op("Mul", s, body.op("Sub", one, s)))

    d_zr = body.op("Concat", dsig(dz, z), dsig(dr, rg), axis=-1)
    dh_prev = body.op("Add", body.op("Add", dh_prev, body.op("Mul", dh, z)),
                      body.op("MatMul", d_zr, r_zr))  # fmt: skip
    if mask:
        dh_prev = body.op("Add", dh_prev, body.op("Mul", mask[1], dh_next))
    dpre = body.op("Concat", d_zr, d_pre_h, axis=-1)
    graph = body.graph([dh_prev, body.op("Identity", r_in), dpre])
    back = 1 - reverse
    n_scan = 3 + len(masks)
    outs = g.op_multi(
        "Scan", [dh_init, r, dy, acts, h_prev, *masks], 3, body=graph, num_scan_inputs=n_scan,
        scan_input_directions=[back] * n_scan, scan_output_directions=[back],
    )  # fmt: skip
    return outs[0], outs[2]
