"""The table of backward rules: one small function per ONNX op, grouped by family.

A rule gets the builder, the forward node, the upstream gradient of each output (`None`
where no gradient reaches that output) and, per input, whether a gradient is wanted. It
returns one gradient per input, in input order, `None` where there is none (shape inputs,
indices, weights nobody asked for). The driver sums gradients that meet at a fan-out and
never calls a rule for a node off the differentiated path.
"""

from __future__ import annotations

# Importing a family module registers its rules in the table.
from . import (
    activation,
    conv,
    elementwise,
    linear,
    max_pooling,
    normalization,
    pooling,
    quantize,
    recurrent,
    reduce,
    resize,
    shape,
)
from .table import NON_DIFFERENTIABLE, RULES, Grad, Rule, register

__all__ = [
    "NON_DIFFERENTIABLE",
    "RULES",
    "Grad",
    "Rule",
    "activation",
    "conv",
    "elementwise",
    "linear",
    "max_pooling",
    "normalization",
    "pooling",
    "quantize",
    "recurrent",
    "reduce",
    "register",
    "resize",
    "shape",
]
