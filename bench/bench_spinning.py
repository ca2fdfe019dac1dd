"""Served latency with `onnxplain serve --spinning` against without, and what it costs where
runs overlap.

For each model (the demo, ResNet-50 and the timm mobile nets of subjects.py, random
weights), two servers on the same models, one with `--spinning` (onnxruntime's threads spin
for work while a run is in flight, and stop as it returns) and one without (the default:
idle threads sleep, and every op run in parallel waits for a worker to wake). One client
calls each in turn (so both see the same machine) and the median guided-backprop Explain
latencies are printed with their ratio. Then one server of each kind holding two models,
two clients calling one model each at the same time: the throughput both get, where the
spinning threads of one run take the cores the other run needs.

    python bench/bench_spinning.py [--threads 2] [--repeats 30] [--seconds 6]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnxplain.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grpc import ROOT, interleaved_ms, start_server, stop_servers
from subjects import SUBJECTS

METHOD = "guided"
MODELS = ("timm_mobilenetv3", "timm_efficientnet_b0", "timm_regnety_008", "resnet50")
OVERLAP = ("timm_mobilenetv3", "timm_efficientnet_b0")


def repository(root: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each subject as `root/<name>/model.onnx`, and the demo; the input to send to each."""
    shutil.copytree(ROOT / "models" / "digits", root / "digits")
    inputs = {"digits": np.load(ROOT / "models/digits/samples/digit3.npy")}
    for name in names:
        loaded = SUBJECTS[name].load()
        (root / name).mkdir()
        onnx.save(loaded.model, root / name / "model.onnx")
        inputs[name] = loaded.image
    return inputs


def _explain_call(client: Client, name: str, x: np.ndarray) -> Callable[[], object]:
    return lambda: client.explain(name, x, method=METHOD, targets=[1])


def _calls_until(deadline: float, call: Callable[[], object]) -> list[float]:
    """Seconds of each call made until `deadline`."""
    spent = []
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)
    return spent


def latency_pairs(root: Path, inputs: dict[str, np.ndarray], args: argparse.Namespace) -> None:
    spinning, spinning_at = start_server(root, args.threads, "--spinning")
    sleeping, sleeping_at = start_server(root, args.threads)
    try:
        with Client(spinning_at, timeout=120) as fast, Client(sleeping_at, timeout=120) as slow:
            for name, x in inputs.items():
                calls = [_explain_call(c, name, x) for c in (fast, slow)]
                spin_ms, sleep_ms = interleaved_ms(calls, args.repeats)
                print(
                    f"| {name} | {sleep_ms:.1f} | {spin_ms:.1f} | {spin_ms / sleep_ms:.2f} |",
                    flush=True,
                )
    finally:
        stop_servers(spinning, sleeping)


def overlapping(root: Path, inputs: dict[str, np.ndarray], args: argparse.Namespace) -> None:
    """Two clients, one model each, on one server: requests per second of each."""
    for label, flags in (("without", ()), ("--spinning", ("--spinning",))):
        proc, address = start_server(root, args.threads, *flags)
        try:
            clients = {name: Client(address, timeout=120) for name in OVERLAP}
            for name, client in clients.items():  # sessions built before the clock starts
                client.explain(name, inputs[name], method=METHOD, targets=[1])
            deadline = time.perf_counter() + args.seconds
            calls = [_explain_call(clients[name], name, inputs[name]) for name in OVERLAP]
            with ThreadPoolExecutor(len(OVERLAP)) as pool:
                spent = pool.map(_calls_until, [deadline] * len(calls), calls)
                results = dict(zip(OVERLAP, spent))
            for client in clients.values():
                client.close()
        finally:
            stop_servers(proc)
        rates = ", ".join(
            f"{name} {len(t) / args.seconds:.1f}/s (median {1000 * statistics.median(t):.1f} ms)"
            for name, t in results.items()
        )
        print(f"| {label} | {rates} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads per run")
    parser.add_argument("--repeats", type=int, default=30, help="calls per server and model")
    parser.add_argument("--seconds", type=float, default=6.0, help="overlapping run length")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        root.mkdir()
        inputs = repository(root, MODELS)
        print(f"{METHOD} backprop over gRPC, onnxruntime CPU, {args.threads} threads per run")
        print("\n| model | sleeping ms | --spinning ms | spinning / sleeping |")
        print("|---|---|---|---|")
        latency_pairs(root, inputs, args)
        print(f"\nTwo clients at once, one on each of {' and '.join(OVERLAP)}, {args.seconds} s:")
        print("| server | each model |\n|---|---|")
        overlapping(root, inputs, args)


if __name__ == "__main__":
    main()
