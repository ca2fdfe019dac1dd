"""`onnxplain explain`'s options for the newer methods, and what it prints about them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .client import Explanation

METHOD_NAMES = (
    "vanilla",
    "deconvnet",
    "guided",
    "gradcam",
    "guided_gradcam",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
)


def add_method_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("method options (`onnxplain models` lists each method's)")
    group.add_argument("--layer", help="Grad-CAM: the layer (default: the model's)")
    group.add_argument("--cam-style", choices=("captum", "pytorch-grad-cam"), default=None)
    group.add_argument(
        "--gradient",
        choices=("vanilla", "deconvnet", "guided"),
        default=None,
        help="SmoothGrad, Integrated Gradients: the gradient averaged (default vanilla)",
    )
    group.add_argument("--steps", type=int, help="Integrated Gradients: points on the path")
    group.add_argument(
        "--integration",
        choices=(
            "gausslegendre",
            "riemann_trapezoid",
            "riemann_left",
            "riemann_right",
            "riemann_middle",
        ),
        default=None,
    )
    group.add_argument(
        "--baseline",
        help="Integrated Gradients: zeros, constant:VALUE, blur:SIGMA or a .npy file",
    )
    group.add_argument("--samples", type=int, help="SmoothGrad: noisy copies per sample")
    group.add_argument("--sigma", type=float, help="SmoothGrad: noise sd / (max - min)")
    group.add_argument("--seed", type=int, help="SmoothGrad: the noise's seed (default random)")


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    baseline: Any = args.baseline
    if baseline is not None and baseline.endswith(".npy"):
        baseline = np.load(Path(baseline))
    return {
        "layer": args.layer,
        "cam_style": args.cam_style,
        "gradient": args.gradient,
        "steps": args.steps,
        "integration": args.integration,
        "baseline": baseline,
        "samples": args.samples,
        "sigma": args.sigma,
        "seed": args.seed,
    }


def method_report(result: Explanation) -> list[str]:
    lines = []
    if result.layer:
        lines.append(f"layer: {result.layer}")
    if result.seed is not None:
        lines.append(f"noise seed: {result.seed} (--seed {result.seed} repeats this map)")
    if result.completeness_gap is not None:
        gaps = ", ".join(f"{g:.4g}" for g in result.completeness_gap)
        lines.append(f"completeness gap: {gaps}")
    return lines


def methods_lines(methods: dict[str, dict[str, str]], default_layer: str) -> list[str]:
    """`onnxplain models`' lines under a model: each method and its parameters' defaults."""
    lines = []
    for name, params in methods.items():
        shown = ", ".join(f"{p}={d}" if d else p for p, d in params.items())
        lines.append(f"  {name}" + (f" ({shown})" if shown else ""))
    if default_layer:
        lines.append(f"  Grad-CAM's default layer: {default_layer}")
    return lines
