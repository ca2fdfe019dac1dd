"""A request's method options → the explain model to run and what to feed it.

The newer methods take parameters. Some change the graph (Grad-CAM's layer and style, the
gradient method that SmoothGrad averages, its sigma, Integrated Gradients' steps, quadrature
and kind of baseline): each combination is its own explain model, built on first use
(by repository.py). The others are fed at run time (SmoothGrad's
noise, drawn here from a seed, and a baseline the caller gives), so one session serves
every value of them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnxplain.graph_rewrite.methods import REGISTRY
from onnxplain.graph_rewrite.methods.integrated_gradients import BASELINE_INPUT, Baseline
from onnxplain.graph_rewrite.methods.smoothgrad import (
    DEFAULT_SAMPLES,
    NOISE_INPUT,
    smoothgrad_noise,
)

from .errors import InvalidInput, RequestTooLarge

# One explain run holds samples (or steps) x batch copies of the input: bounded, as the
# batch is, so that one request cannot take the server's memory.
MAX_COPIES = 1024

GraphParams = tuple[tuple[str, Any], ...]  # hashable: a session's key with the method


@dataclass(frozen=True)
class MethodOptions:
    """What a request may say about its method; None (or empty) where it says nothing."""

    layer: str = ""
    cam_style: str | None = None
    gradient: str | None = None
    steps: int | None = None
    integration: str | None = None
    baseline: str | None = None  # "zeros", "constant:V", "blur:SIGMA" ("input": a tensor)
    baseline_tensor: np.ndarray | None = field(default=None, compare=False)
    samples: int | None = None
    sigma: float | None = None
    seed: int | None = None
    noise: np.ndarray | None = field(default=None, compare=False)

    def given(self) -> dict[str, Any]:
        """The options set, by the name of the method parameter they fill."""
        values = {
            "layer": self.layer or None,
            "cam_style": self.cam_style,
            "gradient": self.gradient,
            "steps": self.steps,
            "integration": self.integration,
            "baseline": "input" if self.baseline_tensor is not None else self.baseline,
            "samples": self.samples if self.noise is None else len(self.noise),
            "sigma": self.sigma,
            "seed": self.seed,
            "noise": None if self.noise is None else "given",
        }
        return {k: v for k, v in values.items() if v is not None}


# Parameters the service handles at run time, not in the graph, per method.
_RUN_TIME = {"smoothgrad": ("samples", "seed", "noise")}


def parameters(method: str) -> list[tuple[str, str, str, str, tuple[str, ...]]]:
    """(name, type, default, description, choices) of each parameter a request may set."""
    spec = REGISTRY[method]
    rows = []
    for p in spec.params:
        if method == "smoothgrad" and p.name in ("seed", "samples"):
            continue  # the service's own versions, below
        default = "" if p.default is None else str(p.default)
        choices = tuple(str(c) for c in p.choices or ())
        rows.append((p.name, p.type.__name__, default, p.description, choices))
    if method == "smoothgrad":
        rows += [
            ("samples", "int", str(DEFAULT_SAMPLES), "noisy copies of each sample", ()),
            ("seed", "int", "", "the noise's seed (default: random, returned)", ()),
            ("noise", "tensor", "", "standard-normal noise [samples, *input shape]", ()),
        ]
    if method == "integrated_gradients":
        rows.append(("baseline", "tensor", "", "a baseline like the input (or one sample)", ()))
    return rows


def graph_params(method: str, options: MethodOptions) -> GraphParams:
    """The parameters that shape `method`'s explain model; InvalidInput for an option the
    method does not take or a value it refuses."""
    spec = REGISTRY[method]
    takes = {p.name for p in spec.params} | set(_RUN_TIME.get(method, ()))
    given = options.given()
    stray = sorted(set(given) - takes)
    if stray:
        takes_text = ", ".join(sorted(takes)) or "no parameters"
        raise InvalidInput(f"method {method!r} takes no {stray[0]!r} (it takes: {takes_text})")
    params = {k: v for k, v in given.items() if k in {p.name for p in spec.params}}
    if method == "smoothgrad":
        # The noise is always fed: seed and samples never reach the graph.
        params.pop("seed", None)
        params.pop("samples", None)
    if "baseline" in params:
        try:
            Baseline.parse(str(params["baseline"]))
        except Exception as exc:
            raise InvalidInput(str(exc)) from None
    try:
        spec.resolve(params)
    except Exception as exc:  # a RewriteError naming the parameter and what it takes
        raise InvalidInput(str(exc)) from None
    return tuple(sorted(params.items()))


@dataclass(frozen=True)
class RunExtras:
    """The feeds a method needs besides the input and the seed, and what to report."""

    feeds: Mapping[str, np.ndarray]
    seed: int | None = None  # SmoothGrad's noise seed, when drawn here


def run_extras(
    method: str, params: GraphParams, options: MethodOptions, x: np.ndarray
) -> RunExtras:
    """SmoothGrad's noise, a given baseline; the copy count checked against MAX_COPIES."""
    if method == "smoothgrad":
        return _noise(options, x)
    if method == "integrated_gradients":
        steps = int(dict(params).get("steps", REGISTRY[method].resolve({})["steps"]))
        _check_copies(steps, len(x), "steps")
        if options.baseline_tensor is not None:
            return RunExtras({BASELINE_INPUT: _baseline(options.baseline_tensor, x)})
        if dict(params).get("baseline") == "input":
            raise InvalidInput("baseline 'input' needs the baseline tensor in the request")
    return RunExtras({})


def _check_copies(copies: int, batch: int, what: str) -> None:
    if copies < 1:
        raise InvalidInput(f"{what} must be at least 1, not {copies}")
    if copies * batch > MAX_COPIES:
        raise RequestTooLarge(
            f"{what} x batch is {copies} x {batch} = {copies * batch} copies of the input; "
            f"this server runs at most {MAX_COPIES} in one explanation"
        )


def _noise(options: MethodOptions, x: np.ndarray) -> RunExtras:
    if options.noise is not None:
        noise = options.noise
        if noise.ndim != x.ndim + 1 or noise.shape[1:] != x.shape:
            raise InvalidInput(
                f"noise shape is {list(noise.shape)}; it must be [samples, "
                f"{', '.join(map(str, x.shape))}] for this input"
            )
        _check_copies(len(noise), len(x), "samples")
        if not np.isfinite(noise).all():
            raise InvalidInput("the noise has non-finite values (NaN or infinity)")
        return RunExtras({NOISE_INPUT: noise.astype(x.dtype, copy=False)})
    samples = DEFAULT_SAMPLES if options.samples is None else options.samples
    _check_copies(samples, len(x), "samples")
    seed = secrets.randbits(63) if options.seed is None else options.seed
    drawn = smoothgrad_noise(x.shape, samples, seed).astype(x.dtype, copy=False)
    return RunExtras({NOISE_INPUT: drawn}, seed=seed)


def _baseline(baseline: np.ndarray, x: np.ndarray) -> np.ndarray:
    if baseline.dtype != x.dtype:
        raise InvalidInput(f"baseline dtype is {baseline.dtype}; the input's is {x.dtype}")
    if baseline.shape not in (x.shape, (1, *x.shape[1:])):
        raise InvalidInput(
            f"baseline shape is {list(baseline.shape)}; it must be the input's, "
            f"{list(x.shape)}, or one sample's, {[1, *x.shape[1:]]}"
        )
    if not np.isfinite(baseline).all():
        raise InvalidInput("the baseline has non-finite values (NaN or infinity)")
    return baseline
