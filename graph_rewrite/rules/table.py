"""The rule table itself: what a rule is, the ops that need none, and `register`.

Apart from the package's __init__ so that the family modules can import it while the
package imports them (each family registers its rules as it is imported).
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
