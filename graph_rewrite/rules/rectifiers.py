"""What a rectifier is, known in this one place: which ops, when a Clip counts, and f'.

The methods that override the rectifiers' backward (deconvnet, guided backprop) and the
true-gradient rules in activation.py both read it from here.

Which ops count is the user's choice (`rectifiers`):

    "relu"  only Relu, as Captum and pytorch-grad-cam do (they swap the backward of
            nn.ReLU modules alone): the default, so that a map compared with theirs
            matches (guided on timm's MobileNetV3: 4e-7 relative L2 from Captum's, 0.97
            under "all"; bench/rectifier_default.py);
    "all"   also ReLU6 and other Clips whose lower bound is 0, LeakyRelu, PRelu and
            HardSwish, the drop-in replacements for ReLU in mobile and newer nets: a
            guided or deconvnet map of a MobileNet then means what it means for a VGG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from ..builder import Builder, Node
from .common import channel_affine, float_mask, positive_mask
from .table import RULES, Grad, Rule

Rectifiers = Literal["relu", "all"]
RECTIFIER_CHOICES: tuple[Rectifiers, ...] = ("relu", "all")
DEFAULT_RECTIFIERS: Rectifiers = "relu"

_EXTRA_RECTIFIERS = ("Clip", "LeakyRelu", "PRelu", "HardSwish")


def rectifier_ops(rectifiers: Rectifiers) -> tuple[str, ...]:
    """The op types that may be rectifiers under the user's choice (Clip: see `is_rectifier`)."""
    if rectifiers not in RECTIFIER_CHOICES:
        raise ValueError(f"unknown rectifiers {rectifiers!r}; choose relu or all")
    return ("Relu", *_EXTRA_RECTIFIERS) if rectifiers == "all" else ("Relu",)


def other_rectifiers(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type "all" adds to "relu" in `model`'s main graph (a Clip
    counted where its lower bound is a constant 0): what the default leaves to its true
    gradient, which the CLI tells the user."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    constants.update(
        (n.output[0], a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute
        if a.name == "value"
    )  # fmt: skip
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in _EXTRA_RECTIFIERS or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Clip" and not _clips_at_zero(node, constants):
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _clips_at_zero(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    for attr in node.attribute:  # opset < 11: the bounds are attributes
        if attr.name == "min":
            return attr.f == 0.0
    if len(node.input) < 2 or node.input[1] not in constants:
        return False
    low = numpy_helper.to_array(constants[node.input[1]]).reshape(-1)
    return low.size == 1 and float(low[0]) == 0.0


def clip_bounds(g: Builder, node: Node) -> tuple[float | None, float | None]:
    """Clip's (min, max) where constant; None for an absent or computed bound."""
    bounds: list[float | None] = []
    for i in (1, 2):
        value = g.info.constant(node.input(i))
        bounds.append(None if value is None else float(value.reshape(-1)[0]))
    return bounds[0], bounds[1]


def is_rectifier(g: Builder, node: Node) -> bool:
    """A Clip is a rectifier only when it clamps below at exactly 0 (ReLU6 and the like)."""
    if node.op_type == "Clip":
        return clip_bounds(g, node)[0] == 0.0
    return node.op_type in ("Relu", *_EXTRA_RECTIFIERS)


def local_derivative(g: Builder, node: Node) -> str:
    """f'(x) of a rectifier node, as a tensor broadcastable to its input.

    Built from the forward *output* where that determines it (Relu), so that onnxruntime
    can still fuse Conv+Relu in the forward part.
    """
    x, y = node.inputs[0], node.outputs[0]
    if node.op_type == "Relu":
        return positive_mask(g, y)
    if node.op_type == "Clip":
        low, high = node.input(1), node.input(2)
        inside = None
        if low:
            inside = g.Greater(x, low)
        if high:
            below = g.Less(x, high)
            inside = below if inside is None else g.And(inside, below)
        return (
            g.Expand(g.scalar_like(1.0, x), g.shape_of(x))
            if inside is None
            else float_mask(g, inside, x)
        )
    if node.op_type == "LeakyRelu":
        alpha = float(node.attr("alpha", 0.01))
        positive = positive_mask(g, x)
        # alpha + (1 - alpha)·[x > 0]
        return g.Add(g.Mul(positive, g.scalar_like(1.0 - alpha, x)), g.scalar_like(alpha, x))
    if node.op_type == "PRelu":
        slope = node.inputs[1]
        positive = positive_mask(g, x)
        one = g.scalar_like(1.0, x)
        return g.Add(positive, g.Mul(g.Sub(one, positive), slope))
    if node.op_type == "HardSwish":
        # x·relu6(x+3)/6: slope 0 below -3, 1 above 3, (2x+3)/6 between.
        if g.dtype_of(x) == np.float32:
            return _hard_swish_slope_float32(g, x)
        three = g.scalar_like(3.0, x)
        above = float_mask(g, g.Greater(x, three), x)
        inside = float_mask(g, g.And(g.Greater(x, g.Neg(three)), g.Not(g.Greater(x, three))), x)
        ramp = g.Div(g.Add(g.Add(x, x), three), g.scalar_like(6.0, x))
        return g.Add(above, g.Mul(inside, ramp))
    raise ValueError(f"{node.op_type} is not a rectifier")


# Steps in float32 as one HardSigmoid each, clip(±2^100·(x - t), 0, 1): the products are
# exact (a power of two; ±inf past 2^28, which clips right), and x - t, a float32 difference
# near t, is 0 or at least 2^-22 in size, so the argument is 0 or negative (clips to 0) or
# at least 2^78 (clips to 1). HardSigmoid stays in onnxruntime's blocked layout beside the
# convolutions, where Greater, Not, And and Cast each force reorders out and back. No beta
# is 0 (OpenVINO reads 0.0 as absent).
_STEP_SLOPE = 2.0**100
# The upper step is [x < 3⁺], 3⁺ the next float32 above 3, i.e. [x <= 3]: at x = 3 exactly
# the slope is the ramp's 1.5, as in the comparison form (torch says 1 there). Which side
# owns the kink decides whether two runtimes agree where a forward value sits on it: PP-OCR
# orientation's SmoothGrad has one HardSwish input that is exactly 3.0 on onnxruntime and
# 2.9999998 on OpenVINO (bench/hardswish_kinks.py); with [x < 3] the two maps were 1.6e-4
# apart (relative L2), with [x <= 3] 2e-6, as with the comparison form.
_THREE_UP = float(np.nextafter(np.float32(3.0), np.float32(np.inf)))


def _hard_swish_slope_float32(g: Builder, x: str) -> str:
    """HardSwish' = B + B·L·(x/3 - 1/2), B = [x > -3], L = [x <= 3]: 0 up to -3, the ramp
    x/3 + 1/2 up to 3, 1 above (the comparison form's values at both edges), in six ops."""
    alive = g.HardSigmoid(x, alpha=_STEP_SLOPE, beta=3.0 * _STEP_SLOPE)
    below = g.HardSigmoid(x, alpha=-_STEP_SLOPE, beta=_THREE_UP * _STEP_SLOPE)
    return g.Add(alive, g.Mul(g.Mul(alive, below), _ramp_less_one(g, x)))


def _ramp_less_one(g: Builder, x: str) -> str:
    """x/3 - 1/2. On an NCHW tensor as a depthwise 1x1 Conv (weight 1/3, bias -1/2): a Mul
    and an Add of scalars would leave onnxruntime's blocked layout, two reorders each."""
    shape = g.tensor(x).static_from(1)
    if shape is None or len(shape) != 3:
        return g.Add(g.Mul(x, g.scalar_like(1.0 / 3.0, x)), g.scalar_like(-0.5, x))
    return channel_affine(g, x, shape[0], 1.0 / 3.0, -0.5)


def with_rectifier_rule(
    rule: Rule | None, rectifiers: Rectifiers = DEFAULT_RECTIFIERS
) -> dict[str, Rule]:
    """The true-gradient rule table with every rectifier's backward replaced by `rule`
    (None: the true gradients, unchanged). A Clip that is not a rectifier keeps its rule."""
    ops = rectifier_ops(rectifiers)
    table = dict(RULES)
    if rule is None:
        return table
    for op in ops:
        table[op] = _only_when_rectifier(rule, RULES[op]) if op == "Clip" else rule
    return table


def _only_when_rectifier(rectified: Rule, plain: Rule) -> Rule:
    def rule(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> Sequence[Grad]:
        if is_rectifier(g, node):
            return rectified(g, node, dys, wants)
        return plain(g, node, dys, wants)

    return rule
