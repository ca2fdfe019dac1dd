"""The three saliency methods, as overrides of the rectifiers' backward rules.

Every op keeps its true gradient except the rectifiers, whose backward is

    vanilla    dX = dY · f'(X)            (the true gradient: [X > 0] for ReLU)
    deconvnet  dX = dY · [dY > 0]         (the forward pass is ignored)
    guided     dX = dY · f'(X) · [dY > 0]

Which ops count as rectifiers is the user's choice (`rectifiers`):

    "relu"  only Relu, as Captum does (it swaps the backward of nn.ReLU modules alone);
    "all"   also ReLU6 and other Clips whose lower bound is 0, LeakyRelu, PRelu and
            HardSwish, the drop-in replacements for ReLU in mobile and newer nets: a
            guided or deconvnet map of a MobileNet then means what it means for a VGG.

f' is the rectifier's true local derivative (the slope for LeakyRelu/PRelu, the ramp
for HardSwish); it is built from the forward *output* where that determines it, so that
onnxruntime can still fuse Conv+Relu in the forward part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from .builder import Builder, Node
from .rules import RULES, Grad, Rule
from .rules.activation import clip_bounds, local_derivative
from .rules.common import upstream

Method = Literal["vanilla", "deconvnet", "guided"]
Rectifiers = Literal["relu", "all"]
METHODS: tuple[Method, ...] = ("vanilla", "deconvnet", "guided")
RECTIFIER_CHOICES: tuple[Rectifiers, ...] = ("relu", "all")

_EXTRA_RECTIFIERS = ("Clip", "LeakyRelu", "PRelu", "HardSwish")


def _gated(use_forward: bool) -> Rule:
    def rule(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
        dy = upstream(node, dys)
        # [dY > 0]·dY is just Relu(dY): one op instead of a compare, a cast and a multiply.
        dx = g.Relu(dy)
        if use_forward:
            dx = g.Mul(dx, local_derivative(g, node))
        return [dx, *([None] * (len(node.inputs) - 1))]

    return rule


def _only_when_rectifier(gated: Rule, plain: Rule) -> Rule:
    """Clip is a rectifier only when it clamps below at 0 (ReLU6); else its plain rule."""

    def rule(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> Sequence[Grad]:
        low, _ = clip_bounds(g, node)
        if low == 0.0:
            return gated(g, node, dys, wants)
        return plain(g, node, dys, wants)

    return rule


def rules_for(method: Method, rectifiers: Rectifiers = "all") -> dict[str, Rule]:
    """The rule table for one method: the true gradients with the rectifiers overridden."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if rectifiers not in RECTIFIER_CHOICES:
        raise ValueError(f"unknown rectifiers {rectifiers!r}; choose relu or all")
    table = dict(RULES)
    if method == "vanilla":
        return table
    gated = _gated(use_forward=method == "guided")
    ops = ("Relu", *_EXTRA_RECTIFIERS) if rectifiers == "all" else ("Relu",)
    overrides: dict[str, Callable[..., Sequence[Grad]]] = {}
    for op in ops:
        overrides[op] = _only_when_rectifier(gated, RULES[op]) if op == "Clip" else gated
    table.update(overrides)
    return table
