"""How much an explanation costs, against a plain forward pass and against Captum, on
onnxruntime and OpenVINO.

For each model (subjects.py: PyTorch exports, timm nets, light-zoo models, pretrained detectors),
each explain-model target and each runtime, in one process on the same threads, prints:
  convert   time to build the guided explain model (build_explain_model(..., target=))
  forward   latency of the model as given
  explain   latency of the explain model (prediction + saliency, one run)
  ratio     explain / forward: the median over forward/explain pairs timed in alternation,
            with its interquartile range (timing.py says why)
  ort-ov    relative L2 distance between the two runtimes' saliency maps (a sanity check:
            a portable explain model should give the same map on both)
A runtime's own target (onnxruntime) is timed on that runtime only, unless --cross.
and for the PyTorch exports:
  captum    latency of captum.attr.GuidedBackprop on the PyTorch model
  diff      relative L2 distance between our map (first runtime) and Captum's (float32
            rounding flips the odd ReLU mask and max-pool switch in a deep random net, so
            ~1e-5, not 1e-7)

Latencies are medians over the timed pairs after --warmup pairs. Each model has its own
number of pairs (fewer for the slow ones; --repeats sets one for all). A model the pass
cannot convert yet is listed with the reason.

    python bench/bench_explain.py                                  # everything, ~15 min
    python bench/bench_explain.py --models resnet50 --runtimes onnxruntime --targets portable
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import ov_profile
import timing
import torch
from bench_batch_cost import free_batch
from captum.attr import GuidedBackprop
from engines import RUNTIMES, SHORT, Engine, Runtime, load
from onnxplain.graph_rewrite import TARGETS, RewriteError, build_explain_model
from subjects import CLASS, SUBJECTS, Loaded, Subject
from wheels import FetchError


@dataclass
class Measured:
    times: timing.Paired
    saliency: np.ndarray


@dataclass
class Row:
    """One model and target: its conversion, and its timings on each runtime."""

    model: str
    target: str
    convert_s: float = 0.0
    runs: dict[Runtime, Measured] = field(default_factory=dict)
    problem: str = ""  # why the model has no figures at all
    failures: dict[Runtime, str] = field(default_factory=dict)  # why a runtime has none
    profile: str = ""  # OpenVINO's time per layer type, with --profile


@dataclass
class CaptumRow:
    model: str
    captum_ms: float
    ours_ms: float
    runtime: Runtime
    diffs: dict[str, float]  # target -> relative L2 distance to Captum's map


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def convert(loaded: Loaded, target: str, repeats: int) -> tuple[onnx.ModelProto, float]:
    """The guided explain model and the median time to build it."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        explain = build_explain_model(
            loaded.model, "guided", output_name=loaded.output, target=target
        )
        times.append(time.perf_counter() - start)
    return explain, statistics.median(times)


def _failure(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"


def meant_for(target: str, runtime: Runtime) -> bool:
    """A runtime's own target is for that runtime alone; "portable" is for every runtime."""
    return target in ("portable", runtime)


def time_target(
    fwd: Engine,
    runtime: Runtime,
    explain: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    most: int,
    args: argparse.Namespace,
) -> Measured:
    """One explain model against the forward model `fwd`, in alternation."""
    budget = {"budget_s": args.budget, "least": min(args.least, most)}
    spinning = args.spinning and runtime == "onnxruntime"
    exp = load(runtime, explain, feeds, args.threads, spinning)
    times = timing.in_alternation(fwd.run, exp.run, args.warmup, most, **budget)
    return Measured(times, exp.output("saliency"))


def measure(
    name: str,
    runtime: Runtime,
    loaded: Loaded,
    explains: dict[str, onnx.ModelProto],
    rows: dict[str, Row],
    most: int,
    args: argparse.Namespace,
) -> None:
    """Times each target's explain model against one forward model on `runtime`, in place."""
    feeds = {loaded.input: loaded.image}
    spinning = args.spinning and runtime == "onnxruntime"
    try:
        fwd = load(runtime, loaded.model, feeds, args.threads, spinning)
    except Exception as e:  # a runtime that rejects the model: say so, measure the rest
        for target in explains:
            rows[target].failures[runtime] = _failure(e)
        return
    for target, explain in explains.items():
        if not (args.cross or meant_for(target, runtime)):
            rows[target].failures[runtime] = f"not measured: target {target} (see --cross)"
            continue
        progress(f"{name} {target} {runtime}: up to {most} pairs")
        try:
            explain_feeds = {**feeds, "output_grad": loaded.seed}
            measured = time_target(fwd, runtime, explain, explain_feeds, most, args)
            rows[target].runs[runtime] = measured
        except Exception as e:
            rows[target].failures[runtime] = _failure(e)
        gc.collect()  # VGG-19's sessions hold gigabytes: free each before the next


def captum_row(
    name: str, loaded: Loaded, rows: list[Row], repeats: int, args: argparse.Namespace
) -> CaptumRow | None:
    """Captum's GuidedBackprop on the PyTorch original, against our map on one runtime."""
    measured = [r for r in rows if r.runs]
    if loaded.net is None or not measured:
        return None
    runtime = next(iter(measured[0].runs))
    guided = GuidedBackprop(loaded.net)
    image = torch.from_numpy(loaded.image)

    def once() -> torch.Tensor:
        return guided.attribute(image.clone().requires_grad_(True), target=CLASS)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns on every call that it sets hooks
        theirs = once().detach().numpy()  # also the warm-up: Captum's first call is slower
        times = timing.series(once, 0, min(repeats, 5), args.budget, least=3)
        seconds = statistics.median(times)
    return CaptumRow(
        model=name,
        captum_ms=1e3 * seconds,
        ours_ms=measured[0].runs[runtime].times.explain_ms,
        runtime=runtime,
        diffs={
            r.target: relative(r.runs[runtime].saliency, theirs)
            for r in measured
            if runtime in r.runs
        },
    )


def profile(
    name: str, target: str, loaded: Loaded, explain: onnx.ModelProto, args: argparse.Namespace
) -> str:
    feeds = {loaded.input: loaded.image}
    forward = ov_profile.layer_times(loaded.model, feeds, args.threads)
    explained = ov_profile.layer_times(explain, {**feeds, "output_grad": loaded.seed}, args.threads)
    return ov_profile.comparison(f"{name}, target {target}", forward, explained)


def bench_subject(subject: Subject, args: argparse.Namespace) -> tuple[list[Row], CaptumRow | None]:
    most = args.repeats or subject.repeats
    progress(f"{subject.name}: loading")
    try:
        loaded = subject.load()
    except (FetchError, ModuleNotFoundError) as e:  # a wheel not fetched, timm not installed
        return [Row(subject.name, t, problem=f"not available: {e}") for t in args.targets], None
    if args.free_batch:  # as users export and the service serves; fed batch 1 all the same
        loaded = replace(loaded, model=free_batch(loaded.model))
    rows = {target: Row(subject.name, target) for target in args.targets}
    explains = {}
    for target, row in rows.items():
        progress(f"{subject.name} {target}: converting")
        try:
            explains[target], row.convert_s = convert(loaded, target, args.convert_repeats)
        except RewriteError as e:
            row.problem = f"not convertible: {str(e).strip().splitlines()[0]}"
    if explains:
        for runtime in args.runtimes:
            measure(subject.name, runtime, loaded, explains, rows, most, args)
    if args.profile:
        for target, explain in explains.items():
            if not (args.cross or meant_for(target, "openvino")):
                continue
            progress(f"{subject.name} {target} openvino: profiling")
            rows[target].profile = profile(subject.name, target, loaded, explain, args)
    del explains
    captum = None
    if args.captum and loaded.net is not None:
        progress(f"{subject.name}: captum")
        captum = captum_row(subject.name, loaded, list(rows.values()), most, args)
    return list(rows.values()), captum


def print_header(args: argparse.Namespace) -> None:
    most = f"up to {args.repeats}" if args.repeats else "up to a number per model of"
    spin = "on while a run is in flight (force_spinning_stop)" if args.spinning else "off"
    print(
        f"onnxruntime {ort.__version__} CPU, OpenVINO {ov.__version__.split('-')[0]} CPU (f32), "
        f"torch {torch.__version__}; {args.threads} threads; guided backprop; "
        f"forward and explain in alternation, {most} pairs (×n in the table; fewer once "
        f"{args.budget:g} s are spent, at least {args.least}) after {args.warmup} warm-up pairs; "
        f"onnxruntime spinning {spin}" + ("; batch dimension free" if args.free_batch else "")
    )


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    header = ["model", "target", "convert s"]
    for runtime in args.runtimes:
        short = SHORT[runtime]
        header += [f"{short} forward ms", f"{short} explain ms", f"{short} ratio"]
    both = len(args.runtimes) == 2
    if both:
        header.append("ort–ov diff")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r.model, r.target]
        if r.problem:
            cells += [r.problem] + [""] * (len(header) - 3)
            print("| " + " | ".join(cells) + " |")
            continue
        cells.append(f"{r.convert_s:.2f}")
        for runtime in args.runtimes:
            m = r.runs.get(runtime)
            if m is None:
                cells += [r.failures.get(runtime, "failed"), "", ""]
            else:
                t = m.times
                cells += [f"{t.forward_ms:.1f}", f"{t.explain_ms:.1f}", t.ratio_text()]
        if both:
            ok = all(rt in r.runs for rt in RUNTIMES)
            diff = (
                relative(r.runs["openvino"].saliency, r.runs["onnxruntime"].saliency)
                if ok
                else None
            )
            cells.append("" if diff is None else f"{diff:.1e}")
        print("| " + " | ".join(cells) + " |")


def print_captum(rows: list[CaptumRow], args: argparse.Namespace) -> None:
    if not rows:
        return
    header = ["model", "captum ms", "ours ms", *(f"diff {t}" for t in args.targets)]
    print(
        f"\nCaptum GuidedBackprop on the PyTorch model ({args.threads} threads) against our "
        f"explain model on {SHORT[rows[0].runtime]} (ours ms: the first target's); "
        "diff: relative L2 distance of the maps"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        diffs = [f"{r.diffs[t]:.1e}" if t in r.diffs else "" for t in args.targets]
        print("| " + " | ".join([r.model, f"{r.captum_ms:.1f}", f"{r.ours_ms:.1f}", *diffs]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=list(SUBJECTS), default=list(SUBJECTS))
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument(
        "--repeats", type=int, default=0, help="most pairs per measure (default: per model)"
    )
    parser.add_argument(
        "--budget", type=float, default=8.0, help="seconds per measure before it stops early"
    )
    parser.add_argument("--least", type=int, default=5, help="pairs timed whatever the budget")
    parser.add_argument("--warmup", type=int, default=1, help="untimed pairs first")
    parser.add_argument("--convert-repeats", type=int, default=1, help="conversions timed")
    parser.add_argument("--threads", type=int, default=2, help="runtime and torch threads")
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="let onnxruntime's threads spin while a run is in flight, as serve --spinning",
    )
    parser.add_argument(
        "--cross",
        action="store_true",
        help="also time a runtime's own target on the other runtime (default: portable only)",
    )
    parser.add_argument("--no-captum", dest="captum", action="store_false", help="skip Captum")
    parser.add_argument(
        "--free-batch",
        action="store_true",
        help="free each model's batch dimension first (as exported with a dynamic batch)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print OpenVINO's time per layer type"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows: list[Row] = []
    captum: list[CaptumRow] = []
    for name in args.models:
        got, captum_got = bench_subject(SUBJECTS[name], args)
        rows += got
        captum += [captum_got] if captum_got else []
    print_header(args)
    print_table(rows, args)
    print_captum(captum, args)
    for row in rows:
        if row.profile:
            print("\n" + row.profile)
    print(f"\n({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
