"""How much an explanation costs, against a plain forward pass and against Captum.

For each model (random weights, eval mode, exported at 1x3x224x224), in one process on
the same threads, prints:
  convert   time to build the explain model (onnxplain.graph_rewrite.build_explain_model)
  forward   onnxruntime latency of the exported model
  explain   onnxruntime latency of the explain model (prediction + saliency, one run)
  ratio     explain / forward, with its interquartile range over the timed pairs
  captum    latency of captum.attr.GuidedBackprop on the PyTorch model
  diff      relative L2 distance between the two saliency maps (float32 rounding flips the
            odd ReLU mask and max-pool switch in a deep random net, so ~1e-5, not 1e-7)

Latencies are medians over --repeats runs after --warmup runs. The forward and explain
sessions run in alternation, a forward run then an explain run (then the other way
round), so that both see the same machine: on a shared machine the speed drifts by 10%
within minutes, and timing one model after the other moved the ratio by as much. The
ratio is the median of the pairs' ratios. With --spinning, whose idle threads would slow
a second live session, the two are timed one after the other instead.

    python bench/bench_explain.py [--models resnet50 vgg19] [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from captum.attr import GuidedBackprop
from onnxplain.graph_rewrite import build_explain_model
from torch import nn

from nets import NETS

SHAPE = (1, 3, 224, 224)
TARGET = 281


@dataclass
class Row:
    model: str
    convert_s: float
    forward_ms: float
    explain_ms: float
    ratio: float
    ratio_quartiles: tuple[float, float]
    captum_ms: float
    diff: float


def export(net: nn.Module, image: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (image,),
            buffer,  # type: ignore[arg-type]  # the stubs omit file objects, which work
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
        )
    return onnx.load_from_string(buffer.getvalue())


def session(model: onnx.ModelProto, threads: int, spinning: bool) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds_of(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_pairs(
    runs: tuple[Callable[[], object], Callable[[], object]], args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """Latencies of two runs timed in alternation (first-then-second, then the reverse)."""
    for run in runs:
        for _ in range(args.warmup):
            run()
    first: list[float] = []
    second: list[float] = []
    for i in range(args.repeats):
        if i % 2 == 0:
            first.append(seconds_of(runs[0]))
            second.append(seconds_of(runs[1]))
        else:
            second.append(seconds_of(runs[1]))
            first.append(seconds_of(runs[0]))
    return first, second


def time_forward_and_explain(
    model: onnx.ModelProto,
    explain: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    args: argparse.Namespace,
) -> tuple[list[float], list[float], np.ndarray]:
    """Forward and explain latencies (paired where both sessions can live), and the saliency."""
    explain_feeds = {**feeds, "output_grad": _seed()}
    if args.spinning:  # one session alive at a time: spinning threads slow the other one
        fwd = session(model, args.threads, True)
        forward = [median_seconds(lambda: fwd.run(None, feeds), args.warmup, args.repeats)]
        del fwd
        exp = session(explain, args.threads, True)
        explained = [
            median_seconds(lambda: exp.run(None, explain_feeds), args.warmup, args.repeats)
        ]
    else:
        fwd = session(model, args.threads, False)
        exp = session(explain, args.threads, False)
        forward, explained = time_pairs(
            (lambda: fwd.run(None, feeds), lambda: exp.run(None, explain_feeds)), args
        )
    saliency = exp.run(None, explain_feeds)[-1]  # the original outputs, then `saliency`
    return forward, explained, saliency


def _seed() -> np.ndarray:
    seed = np.zeros((1, 1000), np.float32)
    seed[0, TARGET] = 1.0
    return seed


def bench_model(name: str, args: argparse.Namespace) -> Row:
    torch.manual_seed(0)
    net = NETS[name]().eval()
    image = torch.randn(SHAPE)
    model = export(net, image)

    converts = []
    for _ in range(args.convert_repeats):
        start = time.perf_counter()
        explain = build_explain_model(model, "guided")
        converts.append(time.perf_counter() - start)

    forward, explained, ours = time_forward_and_explain(
        model, explain, {"image": image.numpy()}, args
    )
    ratios = [e / f for f, e in zip(forward, explained)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3

    guided = GuidedBackprop(net)

    def captum_once() -> torch.Tensor:
        return guided.attribute(image.clone().requires_grad_(True), target=TARGET)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns on every call that it sets hooks
        captum_s = median_seconds(captum_once, args.warmup, args.repeats)
        theirs = captum_once().detach().numpy()
    diff = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    return Row(
        model=name,
        convert_s=statistics.median(converts),
        forward_ms=1e3 * statistics.median(forward),
        explain_ms=1e3 * statistics.median(explained),
        ratio=statistics.median(ratios),
        ratio_quartiles=(quartiles[0], quartiles[2]),
        captum_ms=1e3 * captum_s,
        diff=diff,
    )


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    order = "one after the other" if args.spinning else "in alternation"
    print(
        f"onnxruntime {ort.__version__}, torch {torch.__version__}, {args.threads} threads, "
        f"spinning {'on' if args.spinning else 'off'}, median of {args.repeats} runs "
        f"after {args.warmup} warm-up runs, batch {SHAPE}; forward and explain {order}"
    )
    header = ("model", "convert s", "forward ms", "explain ms", "ratio", "captum ms", "diff")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = (
            r.model,
            f"{r.convert_s:.2f}",
            f"{r.forward_ms:.1f}",
            f"{r.explain_ms:.1f}",
            f"{r.ratio:.2f} ({r.ratio_quartiles[0]:.2f}–{r.ratio_quartiles[1]:.2f})",
            f"{r.captum_ms:.1f}",
            f"{r.diff:.1e}",
        )
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=sorted(NETS), default=["resnet50", "vgg19"])
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--convert-repeats", type=int, default=3, help="conversions timed")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime and torch threads")
    parser.add_argument(
        "--spinning", action="store_true", help="let onnxruntime's idle threads spin (default off)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_table([bench_model(name, args) for name in args.models], args)


if __name__ == "__main__":
    main()
