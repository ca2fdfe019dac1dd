"""The gRPC overhead: end-to-end Explain latency over in-process latency, and throughput.

For the demo model and for a ResNet-50 (random weights, defined below and exported here),
prints the median latency of the core's `Explainer.explain` called in-process, the median
latency of the same request through `onnxplain.client.Client` to an `onnxplain serve`
process on a loopback socket, their ratio (target: <= 1.05 at ResNet-50 scale), and the
requests per second that 8 concurrent clients get. Then, for each model, dynamic batching
on (the default: merges up to 16 rows, as many as measured cheapest) against off
(`--batch-rows 1`): two servers, throughput at 1, 8 and 32 clients, the two timed in
alternating windows; the ratio on/off is the median over the window pairs, with its
interquartile range.

    python bench/bench_grpc.py [--repeats 20] [--seconds 10] [--threads 0] [--windows 5]

The server runs in its own process, so client and server do not share a GIL; in-process and
end-to-end calls alternate (so both see the same load from anything else on the machine),
never overlap, and use the same onnxruntime thread count.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from onnxplain.client import Client
from onnxplain.server import ExplainCall, Explainer, Repository, SessionFactory
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
METHOD = "guided"
CLIENTS = 8


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


def resnet50(classes: int = 1000) -> nn.Module:
    """He et al.'s ResNet-50: stages of 3, 4, 6, 3 bottlenecks of widths 64..512."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]  # fmt: skip
    cin = 64
    for i, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512))):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if b == 0 and i > 0 else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def export_resnet50(folder: Path) -> None:
    torch.manual_seed(0)
    model = resnet50().eval()
    folder.mkdir(parents=True)
    torch.onnx.export(
        model, (torch.randn(1, 3, 224, 224),), str(folder / "model.onnx"),
        input_names=["input"], output_names=["logits"], opset_version=17, dynamo=False,
    )  # fmt: skip


def interleaved_ms(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median ms of each function, called in turn so that all see the same machine load."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()  # warm-up: first runs allocate
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def start_server(repo: Path, threads: int, *flags: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxplain", "serve", "--models", str(repo), "--port", "0",
         "--threads", str(threads), "--drain-delay", "0", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError("the server did not start")
    return proc, line.rsplit(" ", 1)[1].strip()


def stop_servers(*procs: subprocess.Popen[str]) -> None:
    """SIGTERM each server started by `start_server`, and wait for it to drain and exit."""
    for proc in procs:
        proc.terminate()
        proc.wait(60)


def throughput(
    address: str, name: str, x: np.ndarray, seconds: float, count: int = CLIENTS
) -> float:
    clients = [Client(address) for _ in range(count)]
    deadline = time.perf_counter() + seconds

    def loop(client: Client) -> int:
        done = 0
        while time.perf_counter() < deadline:
            client.explain(name, x, method=METHOD, targets=[1])
            done += 1
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        total = sum(pool.map(loop, clients))
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    return total / elapsed


def latencies(
    repo: Path, name: str, x: np.ndarray, address: str, args: argparse.Namespace
) -> list[float]:
    """Median in-process and end-to-end ms; the in-process sessions are freed on return."""
    core = Explainer(Repository.load(repo, SessionFactory("cpu", args.threads)))
    call = ExplainCall(name, x, METHOD, [1])
    with Client(address) as client:
        return interleaved_ms(
            [
                lambda: core.explain(call),
                lambda: client.explain(name, x, method=METHOD, targets=[1]),
            ],
            args.repeats,
        )


def bench(repo: Path, name: str, x: np.ndarray, args: argparse.Namespace) -> None:
    proc, address = start_server(repo, args.threads)
    try:
        local, remote = latencies(repo, name, x, address, args)
        rps = throughput(address, name, x, args.seconds)
    finally:
        stop_servers(proc)
    print(
        f"{name:10s} batch {x.shape[0]}  in-process {local:8.2f} ms  gRPC {remote:8.2f} ms  "
        f"ratio {remote / local:5.3f}  {CLIENTS} clients {rps:7.1f} req/s",
        flush=True,
    )


def batching_ratios(repo: Path, name: str, x: np.ndarray, args: argparse.Namespace) -> None:
    """Throughput with dynamic batching over without, at 1, 8 and 32 clients."""
    on, on_address = start_server(repo, args.threads)
    off, off_address = start_server(repo, args.threads, "--batch-rows", "1")
    window = args.seconds / 2
    try:
        for count in (1, 8, 32):
            # A first window each: sessions built, and the batching server's queue has
            # tried its merge sizes (batch_sizer.py) before it is timed.
            throughput(on_address, name, x, window, count)
            throughput(off_address, name, x, window, count)
            ratios, rates = [], []
            for i in range(args.windows):
                # ABBA order: neither server always runs first after the other's window.
                if i % 2 == 0:
                    with_batching = throughput(on_address, name, x, window, count)
                    without = throughput(off_address, name, x, window, count)
                else:
                    without = throughput(off_address, name, x, window, count)
                    with_batching = throughput(on_address, name, x, window, count)
                ratios.append(with_batching / without)
                rates.append((with_batching, without))
            q1, median, q3 = np.percentile(ratios, [25, 50, 75])
            rps_on = statistics.median(r[0] for r in rates)
            rps_off = statistics.median(r[1] for r in rates)
            print(
                f"{name:10s} {count:2d} clients  batching {rps_on:7.1f} req/s  none "
                f"{rps_off:7.1f} req/s  on/off {median:5.2f}x (IQR {q1:4.2f}-{q3:4.2f}, "
                f"{args.windows} window pairs)",
                flush=True,
            )
    finally:
        stop_servers(on, off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput run length")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all)")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--windows", type=int, default=5, help="batching on/off window pairs")
    args = parser.parse_args()
    print(f"{METHOD} backprop, onnxruntime CPU, threads={args.threads or 'all'}")
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        shutil.copytree(ROOT / "models" / "digits", demo / "digits")
        digit = np.load(ROOT / "models/digits/samples/digit3.npy")
        bench(demo, "digits", digit, args)
        batching_ratios(demo, "digits", digit, args)
        if not args.skip_resnet:
            export_resnet50(Path(tmp) / "resnet" / "resnet50")
            x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)
            bench(Path(tmp) / "resnet", "resnet50", x, args)
            batching_ratios(Path(tmp) / "resnet", "resnet50", x, args)


if __name__ == "__main__":
    main()
