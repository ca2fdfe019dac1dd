"""The table of backward rules: one small function per ONNX op, grouped by family.

A rule gets the builder, the forward node, the upstream gradient of each output (`None`
where no gradient reaches that output) and, per input, whether a gradient is wanted. It
returns one gradient per input, in input order, `None` where there is none (shape inputs,
indices, weights nobody asked for). The driver sums gradients that meet at a fan-out and
never calls a rule for a node off the differentiated path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..builder import Builder, Node

Grad = str | None
Rule = Callable[[Builder, Node, Sequence[Grad], Sequence[bool]], Sequence[Grad]]

RULES: dict[str, Rule] = {}

# Ops whose outputs carry no gradient at all (integer results, comparisons, step
# functions): the path search stops at them, so they need no rule.
NON_DIFFERENTIABLE: frozenset[str] = frozenset(
    {
        "Shape", "Size", "ArgMax", "ArgMin", "Equal", "Greater", "GreaterOrEqual", "Less",
        "LessOrEqual", "Not", "And", "Or", "Xor", "NonZero", "ConstantOfShape", "Range",
        "Constant", "EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike",
        "RandomUniformLike", "Multinomial", "IsNaN", "IsInf", "Sign", "Floor", "Ceil",
        "Round", "TopK_indices",
    }
)  # fmt: skip


def register(*op_types: str) -> Callable[[Rule], Rule]:
    """Registers `rule` as the backward rule of each of `op_types`."""

    def decorate(rule: Rule) -> Rule:
        for op_type in op_types:
            if op_type in RULES:
                raise ValueError(f"two backward rules for {op_type}")
            RULES[op_type] = rule
        return rule

    return decorate


def _load_families() -> None:
    # Importing a family module registers its rules.
    from . import (  # noqa: F401
        activation,
        conv,
        elementwise,
        linear,
        max_pooling,
        normalization,
        pooling,
        reduce,
        resize,
        shape,
    )


_load_families()
