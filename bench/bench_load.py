"""Serving under load: queueing, dynamic batching, one run per request, memory.

Prints the figures README.md's "Serving under load" section quotes:

1. 32 clients for 30 s on the demo model: calls that failed (by status), throughput, p50/p99.
2. 8 clients on a mid-size model (light-zoo SqueezeNet) and ResNet-50: throughput and p99
   with dynamic batching against the same server with merging off (`--batch-rows 1`),
   alternating the two servers (both run the whole time only one at a time).
3. ResNet-50 in-process: latency of a request without targets over one with targets.
4. Resident memory of a server of the light-zoo VGG-19 after one call per method, against
   the model file and the same server's memory with the demo model (the fixed overhead).

    python bench/bench_load.py [--seconds 30] [--batch-seconds 15] [--only demo,batch,...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnxplain.client import Client, ServiceError
from onnxplain.server import ExplainCall, Explainer, Repository, SessionFactory

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_grpc import export_resnet50, interleaved_ms, start_server

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("vanilla", "deconvnet", "guided")


def _threads_run(
    address: str, name: str, x: np.ndarray, clients: int, seconds: float
) -> tuple[list[float], Counter[str], float]:
    """`clients` threads calling for `seconds`: OK latencies (ms), failures, seconds spent."""
    end = time.perf_counter() + seconds
    ok_ms: list[list[float]] = [[] for _ in range(clients)]
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def loop(i: int) -> None:
        with Client(address, timeout=60) as client:
            while time.perf_counter() < end:
                start = time.perf_counter()
                try:
                    client.explain(name, x, method="guided")
                except ServiceError as exc:
                    with lock:
                        failures[exc.code.name] += 1
                    continue
                ok_ms[i].append(1000 * (time.perf_counter() - start))

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [v for per in ok_ms for v in per], failures, time.perf_counter() - start


def load_run(
    address: str, name: str, x: np.ndarray, clients: int, seconds: float
) -> tuple[int, Counter[str], float, list[float]]:
    """Calls OK, failures by status, seconds spent, each OK call's latency in ms.

    Up to 8 client threads per process, in several processes: one Python process's GIL
    would otherwise cap how many calls are in flight, and so hide what the server refuses.
    """
    per = min(clients, 8)
    procs = -(-clients // per)
    if procs == 1:
        ms, failures, spent = _threads_run(address, name, x, clients, seconds)
        return len(ms), failures, spent, ms
    spawn = multiprocessing.get_context("spawn")  # no gRPC state forked into children
    with spawn.Pool(procs) as pool:
        parts = pool.starmap(_threads_run, [(address, name, x, per, seconds)] * procs)
    ms = [v for part in parts for v in part[0]]
    failures = sum((part[1] for part in parts), Counter())
    return len(ms), failures, max(part[2] for part in parts), ms


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def demo(args: argparse.Namespace, tmp: Path) -> None:
    repo = tmp / "demo"
    shutil.copytree(ROOT / "models" / "digits", repo / "digits")
    x = np.load(ROOT / "models/digits/samples/digit3.npy")
    proc, address = start_server(repo, args.threads)
    try:
        load_run(address, "digits", x, 4, 2)  # warm-up
        ok, failed, spent, ms = load_run(address, "digits", x, 32, args.seconds)
    finally:
        proc.terminate()
        proc.wait(60)
    total = ok + sum(failed.values())
    print(
        f"demo, 32 clients x {args.seconds:.0f} s: {ok} OK, {sum(failed.values())} failed "
        f"({100 * sum(failed.values()) / max(total, 1):.2f}%) {dict(failed)}; "
        f"{ok / spent:.0f} OK/s; p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms",
        flush=True,
    )


def _light(name: str, folder: Path) -> np.ndarray:
    from helpers import lightzoo

    model = lightzoo.load(name)
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    return lightzoo.image_for(model)[1]


def batching(args: argparse.Namespace, tmp: Path) -> None:
    subjects = []
    squeeze = tmp / "squeeze"
    subjects.append(("squeezenet", squeeze, _light("squeezenet", squeeze / "squeezenet")))
    if not args.skip_resnet:
        export_resnet50(tmp / "resnet" / "resnet50")
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)
        subjects.append(("resnet50", tmp / "resnet", x))
    for name, repo, x in subjects:
        results: dict[str, list[tuple[float, list[float]]]] = {"merged": [], "alone": []}
        for _ in range(args.rounds):  # alternate: both see the same drift of the machine
            merged = ("--batch-delay-us", str(args.delay_us))
            for mode, flags in (("merged", merged), ("alone", ("--batch-rows", "1"))):
                proc, address = start_server(repo, args.threads, *flags)
                try:
                    load_run(address, name, x, 8, 2)  # warm-up: sessions, arenas
                    ok, failed, spent, ms = load_run(address, name, x, 8, args.batch_seconds)
                finally:
                    proc.terminate()
                    proc.wait(60)
                assert not failed, failed
                results[mode].append((ok / spent, ms))
        rate = {m: statistics.mean(r for r, _ in v) for m, v in results.items()}
        p99 = {m: pct([t for _, ms in v for t in ms], 99) for m, v in results.items()}
        print(
            f"{name}, 8 clients: batching (delay {args.delay_us} us) {rate['merged']:.1f} req/s "
            f"(p99 {p99['merged']:.0f} ms), without {rate['alone']:.1f} req/s "
            f"(p99 {p99['alone']:.0f} ms): "
            f"{rate['merged'] / rate['alone']:.2f}x",
            flush=True,
        )


def targets(args: argparse.Namespace, tmp: Path) -> None:
    repo = tmp / "resnet_t"
    export_resnet50(repo / "resnet50")
    core = Explainer(Repository.load(repo, SessionFactory("cpu", args.threads)))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)
    given = ExplainCall("resnet50", x, "guided", [1])
    top = ExplainCall("resnet50", x, "guided")
    with_t, without = interleaved_ms(
        [lambda: core.explain(given), lambda: core.explain(top)], args.repeats
    )
    print(
        f"resnet50 in-process: with targets {with_t:.1f} ms, without {without:.1f} ms: "
        f"{without / with_t:.3f}x",
        flush=True,
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _served_rss(repo: Path, name: str, x: np.ndarray, threads: int, methods: list[str]) -> float:
    proc, address = start_server(repo, threads)
    try:
        with Client(address, timeout=600) as client:
            for method in methods:
                client.explain(name, x, method=method)
        time.sleep(1)
        return _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)


def memory(args: argparse.Namespace, tmp: Path) -> None:
    demo_repo = tmp / "demo_mem"
    shutil.copytree(ROOT / "models" / "digits", demo_repo / "digits")
    methods = args.methods.split(",")
    fixed = _served_rss(
        demo_repo,
        "digits",
        np.load(ROOT / "models/digits/samples/digit3.npy"),
        args.threads,
        methods,
    )
    repo = tmp / "vgg"
    x = _light("vgg19", repo / "vgg19")
    size = (repo / "vgg19" / "model.onnx").stat().st_size / 2**20
    rss = _served_rss(repo, "vgg19", x, args.threads, methods)
    print(
        f"vgg19 served, one call per method ({args.methods}): RSS {rss:.0f} MB; "
        f"file {size:.0f} MB; fixed overhead (demo server) {fixed:.0f} MB; (RSS - fixed) / file = "
        f"{(rss - fixed) / size:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="demo run length")
    parser.add_argument("--batch-seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternations per model")
    parser.add_argument(
        "--delay-us", type=int, default=4000, help="--batch-delay-us of the batching server"
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all)")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--only", default="demo,batch,targets,memory")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="methods the memory figure calls once each (default: the three gradient methods)",
    )
    args = parser.parse_args()
    parts = {"demo": demo, "batch": batching, "targets": targets, "memory": memory}
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.only.split(","):
            parts[part](args, Path(tmp))


if __name__ == "__main__":
    main()
