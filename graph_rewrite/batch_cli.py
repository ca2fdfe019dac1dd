"""convert's options for the batch methods (SmoothGrad, Integrated Gradients)."""

from __future__ import annotations

import argparse
from typing import Any

import onnx

from .errors import RewriteError
from .integrated_gradients import (
    DEFAULT_STEPS,
    INTEGRATIONS,
    Baseline,
    build_integrated_gradients_model,
)
from .methods import METHODS
from .smoothgrad import DEFAULT_SAMPLES, DEFAULT_SIGMA, build_smoothgrad_model

BATCH_METHODS = ("smoothgrad", "integrated_gradients")


def add_batch_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SmoothGrad and Integrated Gradients")
    group.add_argument(
        "--of",
        dest="base_method",
        choices=METHODS,
        default="vanilla",
        help="the gradient method they average or integrate (default: vanilla)",
    )
    group.add_argument(
        "--sigma",
        type=float,
        default=DEFAULT_SIGMA,
        help="SmoothGrad: the noise's sd as a fraction of each sample's max - min "
        f"(default {DEFAULT_SIGMA})",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=None,
        help="SmoothGrad: store noise drawn from this seed in the model (needs a fixed "
        "per-sample shape); without it the model takes the noise as the input "
        "'smoothgrad_noise' [S, N, ...]",
    )
    group.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"SmoothGrad with --seed: noisy copies stored (default {DEFAULT_SAMPLES})",
    )
    group.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"Integrated Gradients: points on the path (default {DEFAULT_STEPS})",
    )
    group.add_argument(
        "--integration",
        choices=INTEGRATIONS,
        default="gausslegendre",
        help="Integrated Gradients: the quadrature, as Captum's `method` (default gausslegendre)",
    )
    group.add_argument(
        "--baseline",
        type=_baseline,
        default=Baseline(),
        help="Integrated Gradients: zeros (default), constant:VALUE, blur[:SIGMA] (a Gaussian "
        "blur of the input, sigma in pixels, default 5) or input (fed as 'ig_baseline')",
    )


def _baseline(text: str) -> Baseline:
    try:
        return Baseline.parse(text)
    except RewriteError as exc:  # argparse reports only its own type errors as usage errors
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_batch_method(
    model: onnx.ModelProto, args: argparse.Namespace, **common: Any
) -> onnx.ModelProto:
    """The explain model of args.method (one of BATCH_METHODS) with convert's options."""
    if args.method == "smoothgrad":
        return build_smoothgrad_model(
            model,
            args.base_method,
            args.sigma,
            seed=args.seed,
            samples=args.samples,
            **common,
        )
    return build_integrated_gradients_model(
        model, args.steps, args.integration, args.baseline, args.base_method, **common
    )
