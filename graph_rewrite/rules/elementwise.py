"""Elementwise ops: arithmetic with broadcasting, unary maths, n-ary Sum/Mean/Max/Min.

Every gradient that reaches a broadcast operand is summed back to its shape
(`unbroadcast`). Local derivatives are written from the forward output where that is
cheaper (Exp, Sqrt, Reciprocal), so the backward reuses what the forward computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..builder import Builder, Node
from ..errors import RewriteError
from . import channel_gate
from .common import float_mask, onnx_type, unbroadcast, upstream
from .table import Grad, register


def _to_inputs(g: Builder, node: Node, wants: Sequence[bool], grads: Sequence[str]) -> list[Grad]:
    """Per input: its gradient summed back to its shape, or None where not wanted."""
    y = node.outputs[0]
    return [
        unbroadcast(g, grad, x, y) if want else None
        for x, want, grad in zip(node.inputs, wants, grads)
    ]


@register("Add")
def add(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    return _to_inputs(g, node, wants, [dy, dy])


@register("Sub")
def sub(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    return [
        unbroadcast(g, dy, node.inputs[0], node.outputs[0]) if wants[0] else None,
        unbroadcast(g, g.Neg(dy), node.inputs[1], node.outputs[0]) if wants[1] else None,
    ]


@register("Mul")
def mul(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    a, b = node.inputs
    y = node.outputs[0]
    silu = _silu_operands(g, node)
    if silu is not None:
        x, s = silu
        # d(x·σ(x))/dx = σ + x·σ·(1 - σ) = σ + y·(1 - σ), from the forward's σ and y: four
        # elementwise passes instead of the two products' and Sigmoid's eight (Exp,
        # Reciprocal, Div among them), 65 times in EfficientNet-B0. The whole derivative
        # goes to x; σ's input is x too, so σ's own rule has nothing left to add here.
        slope = g.Add(s, g.Mul(y, _one_minus(g, s)))
        dx = g.Mul(dy, slope)
        return [dx if a == x else None, dx if b == x else None]
    gated = channel_gate.gate_grads(g, dy, a, b, y, wants)
    if gated is not None:  # squeeze-excitation's x·s
        return gated
    return [
        unbroadcast(g, g.Mul(dy, b), a, y) if wants[0] else None,
        unbroadcast(g, g.Mul(dy, a), b, y) if wants[1] else None,
    ]


def _one_minus(g: Builder, s: str) -> str:
    """1 - s for s in [0, 1] (a sigmoid's output). On target onnxruntime, in float32, as
    HardSigmoid(s, -1, 1), max(0, min(1, 1 - s)), the same rounding as the Sub: a unary op,
    which onnxruntime keeps in its blocked layout beside the convs, where a Sub from a
    scalar leaves it and takes the SiLU's whole backward along (four reorders each).
    EfficientNet-B0's guided explain model: 300 reorders down to 183, 0.93 of its time
    (paired, 2 threads, 60 rounds; an earlier try under heavy load had timed it the same).
    Not on the portable target: OpenVINO runs HardSigmoid on a reference kernel, and
    there the same graph took 1.25 times as long (2.66 -> 3.34 explain/forward)."""
    if g.target == "onnxruntime" and g.dtype_of(s) == np.float32:
        return g.HardSigmoid(s, alpha=-1.0, beta=1.0)
    return g.Sub(g.scalar_like(1.0, s), s)


def _silu_operands(g: Builder, node: Node) -> tuple[str, str] | None:
    """(x, σ(x)) where the Mul is x·Sigmoid(x) (SiLU as exporters write it), else None."""
    a, b = node.inputs
    if a == b:
        return None
    for x, s in ((a, b), (b, a)):
        source = g.info.producer(s)
        if source is not None and source.op_type == "Sigmoid" and source.input[0] == x:
            return x, s
    return None


@register("Div")
def div(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    a, b = node.inputs
    y = node.outputs[0]
    da = unbroadcast(g, g.Div(dy, b), a, y) if wants[0] else None
    # d(a/b)/db = -a/b² = -y/b
    db = unbroadcast(g, g.Neg(g.Mul(dy, g.Div(y, b))), b, y) if wants[1] else None
    return [da, db]


@register("Pow")
def pow_(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    base, exponent = node.inputs
    y = node.outputs[0]
    dbase: Grad = None
    if wants[0]:
        dbase = unbroadcast(g, g.Mul(dy, _power_slope(g, base, exponent)), base, y)
    dexponent: Grad = None
    if wants[1]:
        # y·ln(base): NaN for a negative base, as the real power is not differentiable there.
        dexponent = unbroadcast(g, g.Mul(dy, g.Mul(y, g.Log(base))), exponent, y)
    return [dbase, dexponent]


def _power_slope(g: Builder, base: str, exponent: str) -> str:
    """b·a^(b-1), folding the exponent into constants where it is one (x², x^0.5...)."""
    dtype = g.dtype_of(base)
    value = g.info.constant(exponent)
    if value is not None:
        b = value.astype(dtype)
        if b.size == 1 and float(b.reshape(-1)[0]) == 2.0:
            return g.Add(base, base)
        return g.Mul(g.Pow(base, g.const(b - 1)), g.const(b))
    if g.dtype_of(exponent) != dtype:
        exponent = g.Cast(exponent, to=onnx_type(g, base))
    return g.Mul(g.Pow(base, g.Sub(exponent, g.scalar_like(1.0, base))), exponent)


@register("Sqrt")
def sqrt(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, y = upstream(node, dys), node.outputs[0]
    return [g.Div(g.Mul(dy, g.scalar_like(0.5, y)), y)]


@register("Neg")
def neg(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    return [g.Neg(upstream(node, dys))]


@register("Abs")
def abs_(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    return [g.Mul(upstream(node, dys), g.Sign(node.inputs[0]))]


@register("Exp")
def exp(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    return [g.Mul(upstream(node, dys), node.outputs[0])]


@register("Log")
def log(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    return [g.Div(upstream(node, dys), node.inputs[0])]


@register("Reciprocal")
def reciprocal(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    y = node.outputs[0]
    return [g.Neg(g.Mul(upstream(node, dys), g.Mul(y, y)))]


@register("Sum")
def sum_(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    return _to_inputs(g, node, wants, [dy] * len(node.inputs))


@register("Mean")
def mean(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    share = g.Mul(dy, g.scalar_like(1.0 / len(node.inputs), node.outputs[0]))
    return _to_inputs(g, node, wants, [share] * len(node.inputs))


@register("Max", "Min")
def extremum(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """The gradient goes to the inputs equal to the result, split evenly between ties.

    Splitting (as torch.maximum and torch.amax do) keeps the rule symmetric in its inputs.
    """
    dy, y = upstream(node, dys), node.outputs[0]
    if len(node.inputs) == 1:
        return [dy]
    hits = [float_mask(g, g.Equal(x, y), y) for x in node.inputs]
    share = g.Div(dy, g.Sum(*hits))
    return _to_inputs(g, node, wants, [g.Mul(share, hit) for hit in hits])


@register("Where")
def where(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    cond, x, other = node.inputs
    y = node.outputs[0]
    to_x = g.Mul(dy, float_mask(g, cond, y))
    return [
        None,
        unbroadcast(g, to_x, x, y) if wants[1] else None,
        unbroadcast(g, g.Sub(dy, to_x), other, y) if wants[2] else None,
    ]


@register("Identity")
def identity(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    return [upstream(node, dys)]


@register("Dropout")
def dropout(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """Inference mode: the identity. Its mask output carries no gradient."""
    training = node.input(2)
    if training:
        value = g.info.constant(training)
        if value is None or bool(value.reshape(-1)[0]):
            raise RewriteError(
                f"Dropout {node.name!r}: only inference mode (training_mode false) is supported"
            )
    return [upstream(node, dys), *([None] * (len(node.inputs) - 1))]


@register("Cast")
def cast(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    x = node.inputs[0]
    if not g.info.is_float(x):
        # From an integer product (MatMulInteger, quantize.py): the gradient with respect
        # to its integer value stays in the float type it arrives in.
        return [upstream(node, dys)]
    return [g.Cast(upstream(node, dys), to=onnx_type(g, x))]


@register("Gelu")
def gelu(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    if node.attr("approximate", "none") == "tanh":
        return [g.Mul(dy, _gelu_tanh_slope(g, x))]
    # x·Φ(x) → Φ(x) + x·φ(x)
    half = g.scalar_like(0.5, x)
    cdf = g.Mul(half, g.Add(g.scalar_like(1.0, x), g.Erf(g.Mul(x, g.scalar_like(0.5**0.5, x)))))
    pdf = g.Mul(
        g.Exp(g.Mul(g.Mul(x, x), g.scalar_like(-0.5, x))),
        g.scalar_like(1.0 / math.sqrt(2.0 * math.pi), x),
    )
    return [g.Mul(dy, g.Add(cdf, g.Mul(x, pdf)))]


def _gelu_tanh_slope(g: Builder, x: str) -> str:
    """d/dx of x/2·(1 + tanh(u)), u = c·(x + k·x³): (1+t)/2 + x/2·(1-t²)·c·(1 + 3k·x²)."""
    c, k = math.sqrt(2.0 / math.pi), 0.044715
    one, half = g.scalar_like(1.0, x), g.scalar_like(0.5, x)
    x2 = g.Mul(x, x)
    u = g.Mul(g.Mul(x, g.Add(one, g.Mul(x2, g.scalar_like(k, x)))), g.scalar_like(c, x))
    t = g.Tanh(u)
    du = g.Mul(g.Add(one, g.Mul(x2, g.scalar_like(3 * k, x))), g.scalar_like(c, x))
    outer = g.Mul(g.Add(one, t), half)
    inner = g.Mul(g.Mul(g.Mul(x, half), g.Sub(one, g.Mul(t, t))), du)
    return g.Add(outer, inner)


@register("Softplus")
def softplus(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    return [g.Mul(upstream(node, dys), g.Sigmoid(node.inputs[0]))]


@register("Elu")
def elu(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x, y = upstream(node, dys), node.inputs[0], node.outputs[0]
    alpha = g.scalar_like(float(node.attr("alpha", 1.0)), x)
    positive = float_mask(g, g.Greater(x, g.scalar_like(0.0, x)), x)
    # 1 above zero, alpha·e^x = y + alpha below.
    below = g.Mul(g.Sub(g.scalar_like(1.0, x), positive), g.Add(y, alpha))
    return [g.Mul(dy, g.Add(positive, below))]


@register("Sin")
def sin(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    return [g.Mul(dy, g.Cos(x))]


@register("Cos")
def cos(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    return [g.Neg(g.Mul(dy, g.Sin(x)))]
