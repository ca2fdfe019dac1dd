"""Integrated Gradients (Sundararajan et al. 2017): the base method's gradient integrated
along the straight path from a baseline x' to x, times (x − x').

    saliency(x) = (x − x') · Σ_i w_i · grad(x' + a_i·(x − x'))

The points a_i and weights w_i follow Captum's `approximation_methods`, so the same
method and step count give Captum's numbers: "riemann_trapezoid" (a_i evenly from 0 to
1, end weights halved), "riemann_left/right/middle", and "gausslegendre" (Legendre nodes
mapped to [0, 1], Captum's default).

Baselines: zeros, a constant, the input blurred (a Gaussian over the spatial axes, edges
repeated; sigma in samples), or one the caller feeds (`ig_baseline`, like x).

The explain model also returns `completeness_gap` [N]: Σ saliency − (f(x) − f(x')) for
the seeded score f = Σ output_grad·output. It tends to 0 as the steps grow (for the true
gradient): a large gap says the integral is not converged, or the path crosses kinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper

from ..builder import Builder
from ..errors import RewriteError
from ..rules.common import onnx_type
from ..rules.rectifiers import DEFAULT_RECTIFIERS, Rectifiers
from ..shapes import InputShapes
from ..targets import Target
from .base import RUN_TIME, MethodSpec, Output, Param, RunFeeds, Tensor
from .batched import (
    Batch,
    Context,
    along_copies,
    build_batched_model,
    flatten_copies,
    reduce,
    seeded_score,
)
from .smoothgrad import GRADIENT

Integration = Literal[
    "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"
]
INTEGRATIONS: tuple[Integration, ...] = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)
BaselineKind = Literal["zeros", "constant", "blur", "input"]
BASELINE_KINDS: tuple[BaselineKind, ...] = ("zeros", "constant", "blur", "input")
BASELINE_INPUT = "ig_baseline"
GAP_OUTPUT = "completeness_gap"
DEFAULT_STEPS = 50  # Captum's
DEFAULT_BLUR_SIGMA = 5.0
_MAX_STEPS = 4096


@dataclass(frozen=True)
class Baseline:
    """Where the path starts: `value` is the constant, or the blur's sigma in samples."""

    kind: BaselineKind = "zeros"
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Baseline:
        """ "zeros", "constant:V", "blur" or "blur:SIGMA", "input"."""
        kind, _, value = text.partition(":")
        if kind not in BASELINE_KINDS:
            raise RewriteError(
                f"unknown baseline {text!r}; use zeros, constant:VALUE, blur[:SIGMA] or input"
            )
        if kind == "constant" and not value:
            raise RewriteError("baseline constant needs a value, e.g. constant:0.5")
        if value and kind in ("zeros", "input"):
            raise RewriteError(f"baseline {kind} takes no value (given {text!r})")
        try:
            number = float(value) if value else (DEFAULT_BLUR_SIGMA if kind == "blur" else 0.0)
        except ValueError:
            raise RewriteError(f"baseline {text!r}: {value!r} is not a number") from None
        return cls(kind, number)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}" if self.kind in ("constant", "blur") else self.kind


def path_points(steps: int, integration: Integration) -> tuple[np.ndarray, np.ndarray]:
    """The points a_i in [0, 1] and the weights w_i of the path integral, float64."""
    if not 1 <= steps <= _MAX_STEPS:
        raise RewriteError(f"Integrated Gradients takes 1 to {_MAX_STEPS} steps, not {steps}")
    if integration == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (1 + nodes), 0.5 * weights
    if integration not in INTEGRATIONS:
        raise RewriteError(
            f"unknown integration {integration!r}; use one of {', '.join(INTEGRATIONS)}"
        )
    if integration == "riemann_trapezoid":
        if steps < 2:
            raise RewriteError("riemann_trapezoid needs at least 2 steps")
        weights = np.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, steps), weights
    starts = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}
    return (np.arange(steps) + starts[integration]) / steps, np.full(steps, 1 / steps)


def build_integrated_gradients_model(
    model: onnx.ModelProto,
    steps: int = DEFAULT_STEPS,
    integration: Integration = "gausslegendre",
    baseline: Baseline = Baseline(),
    method: str = "vanilla",
    input_name: str | None = None,
    output_name: str | None = None,
    rectifiers: Rectifiers = DEFAULT_RECTIFIERS,
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
) -> onnx.ModelProto:
    """The explain model of Integrated Gradients: inputs as the model's, plus `output_grad`
    (and `ig_baseline` for a given baseline); outputs as the model's, plus `saliency` and
    `completeness_gap`."""
    alphas, weights = path_points(steps, integration)
    if baseline.kind not in BASELINE_KINDS:
        raise RewriteError(f"unknown baseline kind {baseline.kind!r}")
    if not np.isfinite(baseline.value) or (baseline.kind == "blur" and baseline.value <= 0):
        raise RewriteError(f"baseline {baseline}: the value must be finite (a blur's, > 0)")
    starts: dict[str, str] = {}

    def prelude(g: Builder, x: str) -> Batch:
        inputs = []
        if baseline.kind == "input":
            info = g.tensor(x)
            inputs.append(helper.make_tensor_value_info(BASELINE_INPUT, info.elem_type, None))
            start = g.Expand(BASELINE_INPUT, g.Shape(x))
        elif baseline.kind == "blur":
            start = gaussian_blur(g, x, baseline.value)
        else:
            start = g.Expand(g.scalar_like(baseline.value, x), g.Shape(x))
        starts["x0"] = start
        diff = g.Sub(x, start)
        starts["diff"] = diff
        points = g.Add(
            g.Unsqueeze(start, g.ints([0])),
            g.Mul(along_copies(g, alphas, x), g.Unsqueeze(diff, g.ints([0]))),
        )
        return Batch(flatten_copies(g, points, x), g.ints([steps]), inputs)

    def epilogue(g: Builder, c: Context) -> dict[str, str]:
        weighted = g.Mul(c.grads, along_copies(g, weights, c.x))
        saliency = g.Mul(reduce(g, "ReduceSum", weighted, [0], keepdims=0), starts["diff"])
        total = reduce(g, "ReduceSum", g.Flatten(saliency, axis=1), [1], keepdims=0)
        change = g.Sub(
            seeded_score(g, c.seed, c.y), seeded_score(g, c.seed, c.forward(starts["x0"]))
        )
        if g.dtype_of(c.y) != g.dtype_of(c.x):
            # The scores in the output's type (float16 inside a float32-I/O model), the
            # gap in the input's, as it is declared.
            change = g.Cast(change, to=onnx_type(g, c.x))
        return {"saliency": saliency, GAP_OUTPUT: g.Sub(total, change)}

    return build_batched_model(
        model,
        method,
        "Integrated Gradients",
        prelude,
        epilogue,
        input_name=input_name,
        output_name=output_name,
        rectifiers=rectifiers,
        target=target,
        input_shapes=input_shapes,
    )


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian of radius round(3σ) (scipy's gaussian_filter, truncate=3)."""
    radius = int(3 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum()


def gaussian_blur(g: Builder, x: str, sigma: float) -> str:
    """x blurred along every axis after the channel one, edges repeated: one 1-D Conv per
    axis on x viewed as [N·C, 1, ...], so channels and sizes may be dynamic."""
    rank = g.tensor(x).rank
    if rank is None or not 3 <= rank <= 5:
        raise RewriteError(
            f"the blurred baseline needs an input with 1 to 3 spatial axes (rank 3-5), "
            f"not rank {rank}"
        )
    spatial = rank - 2
    kernel = gaussian_kernel(sigma).astype(g.dtype_of(x))
    radius = (len(kernel) - 1) // 2
    image_shape = g.Slice(g.Shape(x), g.ints([2]), g.ints([rank]))
    out = g.Reshape(x, g.Concat(g.ints([-1, 1]), image_shape, axis=0))
    for axis in range(spatial):
        pads = [0] * (2 * rank)
        pads[2 + axis] = pads[rank + 2 + axis] = radius
        shape = [1, 1] + [len(kernel) if a == axis else 1 for a in range(spatial)]
        out = g.Pad(out, g.ints(pads), mode="edge")
        out = g.Conv(out, g.const(kernel.reshape(shape), hint="blur"))
    return g.Reshape(out, g.Shape(x))


def _whole_model(
    model: onnx.ModelProto, params: Mapping[str, Any], **options: Any
) -> onnx.ModelProto:
    return build_integrated_gradients_model(
        model,
        params["steps"],
        params["integration"],
        Baseline.parse(params["baseline"]),
        params["gradient"],
        **options,
    )


def _check_baseline(text: str) -> None:
    Baseline.parse(text)


def _copies(params: Mapping[str, Any]) -> tuple[str, int]:
    return "steps", params["steps"]


def _implied(given: Mapping[str, Any]) -> Mapping[str, Any]:
    # A baseline tensor is the baseline kind "input": the model that takes one.
    return {"baseline": "input"} if given.get("baseline_tensor") is not None else {}


def _feeds(params: Mapping[str, Any], x: np.ndarray) -> RunFeeds:
    """The caller's baseline, checked against the input: like it, or like one sample."""
    baseline = params["baseline_tensor"]
    if baseline is None:
        if params["baseline"] == "input":
            raise ValueError("baseline 'input' needs the baseline tensor in the request")
        return RunFeeds()
    if baseline.dtype != x.dtype:
        raise ValueError(f"baseline dtype is {baseline.dtype}; the input's is {x.dtype}")
    if baseline.shape not in (x.shape, (1, *x.shape[1:])):
        raise ValueError(
            f"baseline shape is {list(baseline.shape)}; it must be the input's, "
            f"{list(x.shape)}, or one sample's, {[1, *x.shape[1:]]}"
        )
    if not np.isfinite(baseline).all():
        raise ValueError("the baseline has non-finite values (NaN or infinity)")
    return RunFeeds({BASELINE_INPUT: baseline})


METHOD = MethodSpec(
    name="integrated_gradients",
    summary="Integrated Gradients: the gradient integrated from a baseline to the input, "
    "with the completeness gap",
    build=lambda ctx: "",  # unused: whole_model builds the model
    params=(
        GRADIENT,
        Param("steps", int, DEFAULT_STEPS, "points on the path from the baseline"),
        Param(
            "integration",
            str,
            "gausslegendre",
            "the quadrature, as Captum's `method`",
            choices=INTEGRATIONS,
        ),
        Param(
            "baseline",
            str,
            "zeros",
            "zeros, constant:VALUE, blur[:SIGMA] (a Gaussian blur of the input, sigma in "
            f"pixels, default {DEFAULT_BLUR_SIGMA:g}) or input (fed as {BASELINE_INPUT!r})",
            check=_check_baseline,
        ),
        Param(
            "baseline_tensor",
            Tensor,
            None,
            "the baseline itself, like the input or like one sample (the baseline kind "
            "is then 'input')",
            kind=RUN_TIME,
        ),
    ),
    whole_model=_whole_model,
    outputs=(
        Output(GAP_OUTPUT, "sum of the saliency - (f(x) - f(baseline)); near 0 when converged"),
    ),
    feeds=_feeds,
    copies=_copies,
    implied=_implied,
)
