"""Deconvnet (Zeiler & Fergus 2014): a rectifier passes back only positive gradient,
whatever its forward input was: dX = dY·[dY > 0]."""

from __future__ import annotations

from collections.abc import Sequence

from ..builder import Builder, Node
from ..rules import Grad
from ..rules.common import upstream
from .base import MethodSpec, gradient_at_input


def rectifier_rule(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    # [dY > 0]·dY is just Relu(dY): one op instead of a compare, a cast and a multiply.
    return [g.Relu(upstream(node, dys)), *([None] * (len(node.inputs) - 1))]


METHOD = MethodSpec(
    name="deconvnet",
    summary="rectifiers pass back only positive gradient, ignoring the forward pass",
    build=gradient_at_input(rectifier_rule),
    merges=True,
)
