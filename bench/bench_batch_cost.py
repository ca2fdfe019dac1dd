"""Per-sample explain cost against batch size, on ResNet-50 (subjects.py, random weights).

For each batch size N prints the median time of one explain run (prediction + saliency)
of N samples, the per-sample time, and the per-sample time over batch 1's: the median over
pairs (a batch-1 run and a batch-N run, in alternation, so both see the same load), with
its interquartile range. Issue 20's figure to reach: <= 0.75 at batch 16.

Each size also gets a `forward` row, the same ratio for the plain model (no saliency),
timed in the same alternation: the floor. The backward is mostly Conv (the transposed
convolutions of the input gradient), which batches as the forward's Conv does, so when the
forward's own ratio is ~0.9 the explain model's cannot be expected below it
(bench/profile_batch.py shows the time per op type at two batch sizes).

    python bench/bench_batch_cost.py [--method vanilla] [--sizes 1 4 16 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import numpy as np
import onnx
import timing
from engines import Engine, load
from onnxplain.graph_rewrite import build_explain_model
from subjects import SUBJECTS


def free_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a free batch dimension (subjects.py exports batch 1): shapes
    inferred for batch 1 are dropped, the runtime infers them for each batch."""
    model = copy.deepcopy(model)
    del model.graph.value_info[:]
    for vi in (*model.graph.input, *model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="vanilla")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=10, help="most pairs per size")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per size")
    parser.add_argument("--least", type=int, default=3, help="pairs timed whatever the budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-floor", action="store_true", help="skip the forward rows")
    args = parser.parse_args()
    loaded = SUBJECTS["resnet50"].load()
    explain = build_explain_model(free_batch(loaded.model), args.method, rectifiers="relu")

    forward = free_batch(loaded.model)

    def engine(model: onnx.ModelProto, n: int) -> Engine:
        feeds = {loaded.input: np.repeat(loaded.image, n, axis=0)}
        if model is explain:
            feeds["output_grad"] = np.repeat(loaded.seed, n, axis=0)
        return load("onnxruntime", model, feeds, args.threads)

    models = {args.method: explain} if args.no_floor else {args.method: explain, "forward": forward}
    ones = {label: engine(model, 1) for label, model in models.items()}
    print(f"{args.method} on ResNet-50, onnxruntime, {args.threads} threads", flush=True)
    for n in args.sizes:
        for label, model in models.items():
            batch = engine(model, n)
            one = ones[label]
            paired = timing.in_alternation(
                one.run, batch.run, 1, args.repeats, args.budget, args.least
            )
            _print_row(label, n, paired)
            del batch


def _print_row(label: str, n: int, paired: timing.Paired) -> None:
    per_sample = [b / (n * o) for o, b in zip(paired.forward, paired.explain)]
    q1, _, q3 = statistics.quantiles(per_sample, n=4) if len(per_sample) > 1 else [0, 0, 0]
    print(
        f"{label:10s} batch {n:3d}  run {paired.explain_ms:8.1f} ms  per sample "
        f"{paired.explain_ms / n:7.1f} ms  batch 1 {paired.forward_ms:7.1f} ms  "
        f"per sample / batch 1 {statistics.median(per_sample):.2f} "
        f"(IQR {q1:.2f}-{q3:.2f}) x{len(per_sample)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
