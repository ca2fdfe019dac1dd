"""Saliency methods on ResNet-50 (nets.py, random weights, batch 1), ours against Captum on
PyTorch, in one process on the same threads.

For each method row (ROWS) prints
  captum    latency of Captum's own implementation of the method on the PyTorch model
  ours      latency of our explain model (prediction + saliency, one run) on each runtime
  speed-up  captum / ours: the median over pairs timed in alternation, with its
            interquartile range (timing.py says why)
  diff      relative L2 distance between our map and Captum's (the same thing is timed;
            float32 rounding flips the odd ReLU mask of a deep random net, so ~1e-5)
and a second table, ours only: each explain model against the plain forward pass
(explain / forward, in alternation). A Grad-CAM walk stops at the layer, so it costs less
than guided backprop's walk to the input; the last line times the two explain models
against each other directly (Grad-CAM / guided backprop, in alternation).

A method joins the bench as one more `MethodRow` in ROWS: our method's name and parameters
and a function that sets up Captum's equivalent.

    python bench/bench_methods.py                     # every row, onnxruntime, ~2 min
    python bench/bench_methods.py --rows gradcam --runtimes onnxruntime openvino
"""

from __future__ import annotations

import os

# PyTorch's OpenMP threads spin while they wait, as onnxruntime's would if the engines did
# not turn spinning off (engines.py): on a shared machine (load 12 on 2 cores) that made
# Captum's Grad-CAM on ResNet-50 take 5-10 s a call instead of ~1 s. Passive waiting for
# both, before torch starts its pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import timing
import torch
from captum.attr import (
    GuidedBackprop,
    GuidedGradCam,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from engines import RUNTIMES, SHORT, Runtime, load
from onnxplain.graph_rewrite import build_explain_model, default_layer
from onnxplain.graph_rewrite.methods.smoothgrad import smoothgrad_noise
from subjects import CLASS, SUBJECTS, Loaded
from torch import nn

# Captum's map of one image for class CLASS, set up once per row: (net, image) -> run.
CaptumCall = Callable[[nn.Module, torch.Tensor], Callable[[], torch.Tensor]]


@dataclass(frozen=True)
class MethodRow:
    key: str  # for --rows
    label: str  # for the tables
    method: str  # our registered method
    params: dict[str, Any]
    captum: CaptumCall


def _grad_cam(net: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    # The last block, as our default layer; upsampled to the input as our "captum" style.
    cam = LayerGradCam(net, net.layer4)

    def run() -> torch.Tensor:
        attr = cam.attribute(image, target=CLASS, relu_attributions=True)
        return LayerAttribution.interpolate(attr, tuple(image.shape[2:]), "nearest")

    return run


def _guided_grad_cam(net: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    ggc = GuidedGradCam(net, net.layer4)
    return lambda: ggc.attribute(image, target=CLASS)


def _guided(net: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    guided = GuidedBackprop(net)
    return lambda: guided.attribute(image, target=CLASS)


def _vanilla(net: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    saliency = Saliency(net)
    return lambda: saliency.attribute(image, target=CLASS, abs=False)


IG_STEPS, SG_SAMPLES, SG_SIGMA, SG_SEED = 32, 16, 0.15, 0


def _integrated_gradients(net: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    # All 32 points in one batch, as the explain model runs them (Captum's default).
    ig = IntegratedGradients(net)
    return lambda: ig.attribute(image, target=CLASS, n_steps=IG_STEPS, method="gausslegendre")


def _smoothgrad(net: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    """NoiseTunnel(Saliency) adding the noise our model stores (convert --seed): its
    torch.normal draw is swapped for that noise while it runs."""
    tunnel = NoiseTunnel(Saliency(net))
    x = image.detach().numpy()
    z = smoothgrad_noise((1, *x.shape[1:]), SG_SAMPLES, SG_SEED)[:, 0]
    noise = torch.from_numpy(z * np.float32(SG_SIGMA * float(x.max() - x.min())))

    def run() -> torch.Tensor:
        real = torch.normal
        torch.normal = lambda mean, std, *a, **k: noise.reshape(std.shape)  # type: ignore[assignment]
        try:
            return tunnel.attribute(
                image, nt_type="smoothgrad", nt_samples=SG_SAMPLES, target=CLASS, abs=False
            )
        finally:
            torch.normal = real

    return run


ROWS: list[MethodRow] = [
    MethodRow("gradcam", "Grad-CAM (layer4)", "gradcam", {}, _grad_cam),
    MethodRow("guided_gradcam", "Guided Grad-CAM (layer4)", "guided_gradcam", {}, _guided_grad_cam),
    MethodRow("guided", "guided backprop", "guided", {"rectifiers": "relu"}, _guided),
    MethodRow("vanilla", "vanilla gradient", "vanilla", {}, _vanilla),
    MethodRow(
        "ig",
        f"Integrated Gradients ({IG_STEPS} steps)",
        "integrated_gradients",
        {"steps": IG_STEPS},
        _integrated_gradients,
    ),
    MethodRow(
        "smoothgrad",
        f"SmoothGrad ({SG_SAMPLES} samples)",
        "smoothgrad",
        # The noise stored in the model (a seed), so it runs on the same feeds as the rest.
        {"sigma": SG_SIGMA, "seed": SG_SEED, "samples": SG_SAMPLES},
        _smoothgrad,
    ),
]


@dataclass
class Result:
    row: MethodRow
    explain: onnx.ModelProto
    captum_ms: float = 0.0
    # per runtime: ours against Captum (forward = ours, explain = Captum's, so the
    # Paired ratio is the speed-up), ours against the forward model, max error
    against_captum: dict[str, timing.Paired] = field(default_factory=dict)
    against_forward: dict[str, timing.Paired] = field(default_factory=dict)
    diff: dict[str, float] = field(default_factory=dict)


def relative(got: np.ndarray, want: np.ndarray) -> float:
    got, want = got.astype(np.float64), want.astype(np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def bench_row(
    row: MethodRow, loaded: Loaded, runtimes: list[Runtime], args: argparse.Namespace
) -> Result:
    assert loaded.net is not None
    params = dict(row.params)
    rectifiers = params.pop("rectifiers", "relu")  # Captum rectifies nn.ReLU only
    explain = build_explain_model(loaded.model, row.method, rectifiers=rectifiers, params=params)
    feeds = {loaded.input: loaded.image, "output_grad": loaded.seed}
    image = torch.from_numpy(loaded.image.copy()).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns on every call that it sets hooks
        theirs_call = row.captum(loaded.net, image)
        theirs = theirs_call().detach().numpy()  # also the warm-up: the first call is slower
        result = Result(row, explain)
        for runtime in runtimes:
            ours = load(runtime, explain, feeds, args.threads)
            forward = load(runtime, loaded.model, {loaded.input: loaded.image}, args.threads)
            result.diff[runtime] = relative(ours.output("saliency"), theirs)
            result.against_captum[runtime] = timing.in_alternation(
                ours.run, theirs_call, args.warmup, args.repeats, args.budget, args.least
            )
            result.against_forward[runtime] = timing.in_alternation(
                forward.run, ours.run, args.warmup, args.repeats, args.budget, args.least
            )
    first = next(iter(result.against_captum.values()))
    result.captum_ms = 1e3 * statistics.median(first.explain)
    return result


def walk_cost(
    results: list[Result], loaded: Loaded, runtimes: list[Runtime], args: argparse.Namespace
) -> dict[str, timing.Paired]:
    """Grad-CAM's explain model against guided backprop's, per runtime, in alternation."""
    by_key = {r.row.key: r.explain for r in results}
    if "gradcam" not in by_key or "guided" not in by_key:
        return {}
    feeds = {loaded.input: loaded.image, "output_grad": loaded.seed}
    paired = {}
    for runtime in runtimes:
        guided = load(runtime, by_key["guided"], feeds, args.threads)
        gradcam = load(runtime, by_key["gradcam"], feeds, args.threads)
        paired[runtime] = timing.in_alternation(
            guided.run, gradcam.run, args.warmup, args.repeats, args.budget, args.least
        )
    return paired


def print_tables(
    results: list[Result],
    walks: dict[str, timing.Paired],
    runtimes: list[Runtime],
    args: argparse.Namespace,
) -> None:
    print(
        f"ResNet-50, batch 1, 224x224, class {CLASS}; onnxruntime {ort.__version__} CPU, "
        f"OpenVINO {ov.__version__.split('-')[0]} CPU (f32), torch {torch.__version__}, "
        f"Captum; {args.threads} threads; up to {args.repeats} pairs in alternation "
        f"(fewer once {args.budget:g} s are spent, at least {args.least}) after "
        f"{args.warmup} warm-up pairs"
    )
    header = ["method", "captum ms"]
    for rt in runtimes:
        header += [f"ours {SHORT[rt]} ms", f"speed-up {SHORT[rt]}", f"diff {SHORT[rt]}"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        cells = [r.row.label, f"{r.captum_ms:.1f}"]
        for rt in runtimes:
            paired = r.against_captum[rt]
            cells += [f"{paired.forward_ms:.1f}", paired.ratio_text(), f"{r.diff[rt]:.1e}"]
        print("| " + " | ".join(cells) + " |")
    header = ["method"]
    for rt in runtimes:
        header += [f"{SHORT[rt]} forward ms", f"{SHORT[rt]} explain ms", f"{SHORT[rt]} ratio"]
    print("\nOurs against the plain forward pass (explain / forward, in alternation)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        cells = [r.row.label]
        for rt in runtimes:
            p = r.against_forward[rt]
            cells += [f"{p.forward_ms:.1f}", f"{p.explain_ms:.1f}", p.ratio_text()]
        print("| " + " | ".join(cells) + " |")
    for rt, p in walks.items():
        print(
            f"\nGrad-CAM / guided backprop, {SHORT[rt]}, in alternation: {p.ratio_text()} "
            f"({p.explain_ms:.1f} ms against {p.forward_ms:.1f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    keys = [r.key for r in ROWS]
    parser.add_argument("--rows", nargs="+", choices=keys, default=keys)
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=["onnxruntime"])
    parser.add_argument("--repeats", type=int, default=20, help="most pairs per measure")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per measure")
    parser.add_argument("--least", type=int, default=5, help="pairs timed whatever the budget")
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs first")
    parser.add_argument("--threads", type=int, default=2, help="runtime and torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = SUBJECTS["resnet50"].load()
    layer = default_layer(loaded.model)
    print(f"Grad-CAM layer (our default): {layer!r}", flush=True)
    results = []
    for row in ROWS:
        if row.key in args.rows:
            print(f"... {row.label}", flush=True)
            results.append(bench_row(row, loaded, args.runtimes, args))
    walks = walk_cost(results, loaded, args.runtimes, args)
    print_tables(results, walks, args.runtimes, args)


if __name__ == "__main__":
    main()
