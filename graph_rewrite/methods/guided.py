"""Guided backpropagation (Springenberg et al. 2014): a rectifier passes back positive
gradient where it was open in the forward pass: dX = dY·f'(X)·[dY > 0]."""

from __future__ import annotations

from collections.abc import Sequence

from ..builder import Builder, Node
from ..rules import Grad
from ..rules.common import upstream
from ..rules.rectifiers import local_derivative
from .base import MethodSpec, gradient_at_input


def rectifier_rule(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    dx = g.Mul(g.Relu(upstream(node, dys)), local_derivative(g, node))
    return [dx, *([None] * (len(node.inputs) - 1))]


METHOD = MethodSpec(
    name="guided",
    summary="guided backpropagation: deconvnet's gate and the true gradient's, together",
    build=gradient_at_input(rectifier_rule),
    merges=True,
)
