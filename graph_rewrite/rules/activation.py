"""Activations: the rectifiers' true gradients (what a rectifier is: rectifiers.py) and
smooth ones.

Masks are 0/1 float tensors multiplied into the gradient (`positive_mask`, else
Cast(Greater(...))): on onnxruntime CPU that is several times faster than Where.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..builder import Builder, Node
from .common import float_mask, unbroadcast, upstream
from .rectifiers import local_derivative
from .table import Grad, register


def _first_input_only(dx: str, node: Node) -> list[Grad]:
    return [dx, *([None] * (len(node.inputs) - 1))]


@register("Relu", "Clip", "LeakyRelu", "HardSwish")
def rectifier(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    return _first_input_only(g.Mul(dy, local_derivative(g, node)), node)


@register("PRelu")
def prelu(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    x, slope = node.inputs[0], node.inputs[1]
    dx = g.Mul(dy, local_derivative(g, node)) if wants[0] else None
    dslope = None
    if wants[1]:
        negative = g.Mul(x, float_mask(g, g.Not(g.Greater(x, g.scalar_like(0.0, x))), x))
        dslope = unbroadcast(g, g.Mul(dy, negative), slope, node.outputs[0])
    return [dx, dslope]


@register("Sigmoid")
def sigmoid(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """σ'(x) = 1/(eˣ + 2 + e⁻ˣ), not σ·(1 - σ) from the forward output.

    Where σ saturates, 1 - σ is 0 or a few ulps, and runtimes' own σ are inexact in the
    tails (onnxruntime CPU: σ(-17) = 8.9e-8 against 4.1e-8, σ(-20) = 0): two runtimes then
    gave maps 0.11 apart (rel. L2, PaddleOCR det, random input, OpenVINO against
    onnxruntime). The sum of three positive terms has no cancellation, so it is exact to a
    few ulps over the whole range; where eˣ or e⁻ˣ overflows (|x| > 88.7) the quotient is 0,
    as the true value (< 3e-39) is in float32's subnormals. Five ops (Exp, Reciprocal, two
    Adds, Div) against seven for e/(1 + e)² with e = exp(-|x|): EfficientNet's 65 SiLUs made
    that chain ~20% of the explain model's onnxruntime time.
    """
    dy, x = upstream(node, dys), node.inputs[0]
    e = g.Exp(x)
    cosh_sum = g.Add(g.Add(e, g.Reciprocal(e)), g.scalar_like(2.0, x))
    return [g.Div(dy, cosh_sum)]


@register("Tanh")
def tanh(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, y = upstream(node, dys), node.outputs[0]
    return [g.Mul(dy, g.Sub(g.scalar_like(1.0, y), g.Mul(y, y)))]


@register("HardSigmoid")
def hard_sigmoid(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    z = g.Add(g.Mul(x, g.scalar_like(alpha, x)), g.scalar_like(beta, x))
    inside = float_mask(
        g, g.And(g.Greater(z, g.scalar_like(0.0, x)), g.Less(z, g.scalar_like(1.0, x))), x
    )
    return [g.Mul(dy, g.Mul(inside, g.scalar_like(alpha, x)))]


@register("Erf")
def erf(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, x = upstream(node, dys), node.inputs[0]
    slope = g.Mul(g.Exp(g.Neg(g.Mul(x, x))), g.scalar_like(2.0 / math.sqrt(math.pi), x))
    return [g.Mul(dy, slope)]


@register("Softmax")
def softmax(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, y = upstream(node, dys), node.outputs[0]
    axes = g.ints([int(node.attr("axis", -1))])
    inner = g.ReduceSum(g.Mul(dy, y), axes, keepdims=1)
    return [g.Mul(y, g.Sub(dy, inner))]


@register("LogSoftmax")
def log_softmax(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy, y = upstream(node, dys), node.outputs[0]
    axes = g.ints([int(node.attr("axis", -1))])
    return [g.Sub(dy, g.Mul(g.Exp(y), g.ReduceSum(dy, axes, keepdims=1)))]


@register("Mish")
def mish(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """mish(x) = x·tanh(softplus(x)): the slope is t + x·(1 - t²)·σ(x), t = tanh(softplus(x)).

    The dynamo exporter writes Mish as one op (CSPDarknet, YOLOv4-style nets). Both tails
    stay finite: for large x, 1 - t² is 0; for very negative x, σ(x) is."""
    dy, x = upstream(node, dys), node.inputs[0]
    t = g.Tanh(g.Softplus(x))
    sech2 = g.Sub(g.scalar_like(1.0, x), g.Mul(t, t))
    slope = g.Add(t, g.Mul(g.Mul(x, sech2), g.Sigmoid(x)))
    return [g.Mul(dy, slope)]


@register("Selu")
def selu(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """γ above zero, γ·α·eˣ at and below (ONNX's defaults are SELU's constants)."""
    dy, x = upstream(node, dys), node.inputs[0]
    alpha = float(node.attr("alpha", 1.67326319217681884765625))
    gamma = float(node.attr("gamma", 1.05070102214813232421875))
    positive = float_mask(g, g.Greater(x, g.scalar_like(0.0, x)), x)
    # Min(x, 0) keeps eˣ from overflowing where the positive branch is taken anyway.
    below = g.Mul(g.scalar_like(alpha, x), g.Exp(g.Min(x, g.scalar_like(0.0, x))))
    slope = g.Add(positive, g.Mul(g.Sub(g.scalar_like(1.0, x), positive), below))
    return [g.Mul(dy, g.Mul(g.scalar_like(gamma, x), slope))]


@register("Celu")
def celu(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """1 above zero, exp(x/α) at and below."""
    dy, x = upstream(node, dys), node.inputs[0]
    alpha = float(node.attr("alpha", 1.0))
    positive = float_mask(g, g.Greater(x, g.scalar_like(0.0, x)), x)
    scaled = g.Mul(g.Min(x, g.scalar_like(0.0, x)), g.scalar_like(1.0 / alpha, x))
    below = g.Mul(g.Sub(g.scalar_like(1.0, x), positive), g.Exp(scaled))
    return [g.Mul(dy, g.Add(positive, below))]


@register("Softsign")
def softsign(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """x / (1 + |x|) has slope 1 / (1 + |x|)²."""
    dy, x = upstream(node, dys), node.inputs[0]
    d = g.Add(g.Abs(x), g.scalar_like(1.0, x))
    return [g.Div(dy, g.Mul(d, d))]


@register("ThresholdedRelu")
def thresholded_relu(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    """x above alpha, else 0: the plain gradient [x > alpha]. Not a rectifier for the
    methods' ReLU rule: its output jumps from 0 to alpha, so it is no ReLU."""
    dy, x = upstream(node, dys), node.inputs[0]
    above = float_mask(g, g.Greater(x, g.scalar_like(float(node.attr("alpha", 1.0)), x)), x)
    return [g.Mul(dy, above)]
