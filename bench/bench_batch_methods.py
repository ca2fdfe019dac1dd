"""Integrated Gradients and SmoothGrad as explain models against Captum, in one process.

ResNet-50 (nets.py, random weights, torch.onnx export with a fixed batch of 1 that the
batch methods free), batch 1, the same number of threads for onnxruntime and PyTorch:

  IG          IntegratedGradients, 32 Gauss-Legendre steps from a zero baseline
              (Captum: all 32 points in one batch, as the explain model runs them)
  SmoothGrad  NoiseTunnel(Saliency(abs=False), "smoothgrad"), 16 samples, sigma 0.15 of
              the input's range; Captum draws the same noise (its draw is patched)

Each row prints Captum's latency, ours, their ratio (Captum / ours: > 1 means we are
faster), the median over runs timed in alternation (timing.py), and the relative L2
distance between the two maps (they compute the same thing).

    python bench/bench_batch_methods.py [--threads 2] [--pairs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

sys.path.insert(0, str(Path(__file__).parent))
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.methods.smoothgrad import NOISE_INPUT, smoothgrad_noise
from subjects import _pytorch
from timing import in_alternation

STEPS, SAMPLES, SIGMA = 32, 16, 0.15


def session(model: Any, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def row(
    name: str, theirs: Callable[[], np.ndarray], ours: Callable[[], np.ndarray], pairs: int
) -> None:
    distance = rel_l2(ours(), theirs())
    timed = in_alternation(theirs, ours, warmup=1, most=pairs, least=pairs)
    captum_s = statistics.median(timed.forward)
    ours_s = statistics.median(timed.explain)
    speedup = statistics.median(f / e for f, e in zip(timed.forward, timed.explain, strict=True))
    print(
        f"{name:<12} captum {captum_s * 1e3:8.0f} ms   ours {ours_s * 1e3:8.0f} ms   "
        f"captum/ours {speedup:5.2f}   rel. L2 {distance:.1e}   ×{len(timed.forward)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = _pytorch("resnet50")()
    net, model, x, seed = loaded.net, loaded.model, loaded.image, loaded.seed
    assert net is not None
    target = int(seed.argmax())
    xt = torch.from_numpy(x)
    print(
        f"ResNet-50, batch 1, {args.threads} threads, "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}"
    )

    started = time.perf_counter()
    ig_model = build_explain_model(
        model, "integrated_gradients", params={"steps": STEPS}, target="onnxruntime"
    )
    ig = session(ig_model, args.threads)
    print(f"convert IG: {time.perf_counter() - started:.1f} s")
    ig_captum = IntegratedGradients(net)
    row(
        f"IG {STEPS}",
        lambda: ig_captum.attribute(xt, target=target, n_steps=STEPS).detach().numpy(),
        lambda: ig.run(["saliency"], {"image": x, "output_grad": seed})[0],
        args.pairs,
    )

    sg = session(
        build_explain_model(model, "smoothgrad", params={"sigma": SIGMA}, target="onnxruntime"),
        args.threads,
    )
    noise = smoothgrad_noise(x.shape, SAMPLES, seed=0)
    spread = float(x.max() - x.min())
    captum_noise = torch.from_numpy(noise[:, 0] * np.float32(SIGMA * spread))
    real_normal = torch.normal

    def patched(mean: object, std: torch.Tensor, *a: object, **k: object) -> torch.Tensor:
        return captum_noise.reshape(std.shape)

    torch.normal = patched  # type: ignore[assignment]  # Captum draws our noise
    try:
        tunnel = NoiseTunnel(Saliency(net))
        row(
            f"SmoothGrad {SAMPLES}",
            lambda: (
                tunnel.attribute(
                    xt, nt_type="smoothgrad", nt_samples=SAMPLES, target=target, abs=False
                )
                .detach()
                .numpy()
            ),
            lambda: sg.run(["saliency"], {"image": x, "output_grad": seed, NOISE_INPUT: noise})[0],
            args.pairs,
        )
    finally:
        torch.normal = real_normal


if __name__ == "__main__":
    main()
