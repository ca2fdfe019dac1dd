"""The rule table itself: what a rule is, the ops that need none, and `register`.

Apart from the package's __init__ so that the family modules can import it while the
package imports them (each family registers its rules as it is imported).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..builder import Builder, Node

Grad = str | None
Rule = Callable[[Builder, Node, Sequence[Grad], Sequence[bool]], Sequence[Grad]]

# Keyed by rule_key: an ai.onnx op by its op_type, any other domain's op by its
# domain-qualified name, so that a custom op that happens to share an ONNX op's name
# (com.example's Relu) is never given the ONNX op's rule.
RULES: dict[str, Rule] = {}

# The domains that mean ai.onnx itself.
DEFAULT_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx"})

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


def rule_key(op_type: str, domain: str = "") -> str:
    """The RULES key of an op: `op_type` in ai.onnx, "domain.op_type" in any other domain
    ("com.microsoft.DynamicQuantizeLSTM", as onnxruntime's ContribOperators.md names it)."""
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}.{op_type}"


def node_rule_key(node: Node) -> str:
    """rule_key of a forward node (a node built by a rule, with no proto, is ai.onnx)."""
    return rule_key(node.op_type, node.proto.domain if node.proto is not None else "")


def register(*op_types: str) -> Callable[[Rule], Rule]:
    """Registers `rule` as the backward rule of each of `op_types` (RULES keys: an ai.onnx
    op_type, or a domain-qualified name for another domain's op)."""

    def decorate(rule: Rule) -> Rule:
        for op_type in op_types:
            if op_type in RULES:
                raise ValueError(f"two backward rules for {op_type}")
            RULES[op_type] = rule
        return rule

    return decorate
