"""Where the explain time goes at two batch sizes: onnxruntime's kernel time per op type,
per sample, at batch 1 and batch N, on ResNet-50 (subjects.py, random weights).

Answers why per-sample cost hardly falls with the batch (bench_batch_cost.py): an op type
whose per-sample time stays flat or grows at batch N is what keeps the ratio up. Kernel
times come from onnxruntime's own profiler (SessionOptions.enable_profiling), summed over
the timed runs, so they leave out the time between kernels.

    python bench/profile_batch.py [--method vanilla] [--batch 16] [--forward] [--top 14]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from bench_batch_cost import free_batch
from onnxplain.graph_rewrite import build_explain_model
from subjects import SUBJECTS


def kernel_ms_per_sample(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, runs: int
) -> dict[str, float]:
    """Milliseconds of kernel time per op type, per run and per sample (after a warm-up)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "profile")
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    session.run(None, feeds)  # warm-up (allocations, first-run costs): left out below
    for _ in range(runs):
        session.run(None, feeds)
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    # The profile holds every run, the warm-up too: kernels that start before the first
    # run's end are its own (it costs several times a later run, at batch N the most).
    first = min(
        (e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
        key=lambda e: e["ts"],
    )
    warm_end = first["ts"] + first["dur"]
    total: collections.Counter[str] = collections.Counter()
    for event in events:
        if (
            event.get("cat") == "Node"
            and event["name"].endswith("_kernel_time")
            and event["ts"] >= warm_end
        ):
            total[event["args"]["op_name"]] += event["dur"]
    n = next(iter(feeds.values())).shape[0]
    return {op: us / runs / n / 1e3 for op, us in total.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="vanilla")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3, help="timed runs at batch N")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forward", action="store_true", help="profile the plain model too")
    parser.add_argument("--top", type=int, default=14, help="op types shown")
    args = parser.parse_args()
    loaded = SUBJECTS["resnet50"].load()
    forward = free_batch(loaded.model)
    models = {args.method: build_explain_model(forward, args.method, rectifiers="relu")}
    if args.forward:
        models["forward"] = forward
    for label, model in models.items():

        def feeds(n: int, model: onnx.ModelProto = model) -> dict[str, np.ndarray]:
            fed = {loaded.input: np.repeat(loaded.image, n, axis=0)}
            if "output_grad" in {i.name for i in model.graph.input}:
                fed["output_grad"] = np.repeat(loaded.seed, n, axis=0)
            return fed

        # Batch 1 gets as many samples as batch N in all, so both see a similar stretch of load.
        one = kernel_ms_per_sample(model, feeds(1), args.threads, args.runs * args.batch)
        many = kernel_ms_per_sample(model, feeds(args.batch), args.threads, args.runs)
        a, b = sum(one.values()), sum(many.values())
        print(
            f"{label} on ResNet-50, kernel ms per sample: batch 1 {a:.1f}, "
            f"batch {args.batch} {b:.1f}, ratio {b / a:.2f}",
            flush=True,
        )
        for op in sorted(one, key=lambda op: -one[op])[: args.top]:
            print(
                f"  {op:22s} batch 1 {one[op]:7.2f}  batch {args.batch} "
                f"{many.get(op, 0.0):7.2f}  ratio {many.get(op, 0.0) / one[op]:.2f}  "
                f"share {one[op] / a:.0%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
