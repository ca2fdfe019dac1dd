"""The per-model queue: waiting instead of refusing, merging, deadlines and cancellation.

Merged runs are checked against the explain model run on each caller's input alone (the
oracle of helpers/server_support), over a real loopback socket; the queue's own rules on a
queue whose runs are plain numpy; stopping work by the server process's CPU time.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxplain.client import Client
from onnxplain.server import (
    Cancelled,
    DeadlineExceeded,
    Explainer,
    Limits,
    Overloaded,
    QueueLimits,
    Repository,
    SessionFactory,
    build_server,
)
from onnxplain.server.core.batching import ModelQueue
from onnxplain.server.ops import hooks
from onnxplain.server.runtime.engines import Cancel

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_tensor

from helpers.server_support import DEMO, SAMPLES, direct_explain


@contextmanager
def serving(root: Path, queue: QueueLimits) -> Iterator[str]:
    core = Explainer(Repository.load(root, SessionFactory("cpu", threads=1)), 16, queue=queue)
    service = build_server(core, "127.0.0.1", 0, Limits(1 << 22, queue.instances))
    try:
        yield f"127.0.0.1:{service.port}"
    finally:
        service.server.stop(None).wait()


# ---------------------------------------------------------------- merging, over a socket


def test_concurrent_callers_each_get_their_own_rows_with_mixed_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(DEMO, tmp_path / "digits")
    runs: list[int] = []
    monkeypatch.setattr(hooks, "_BATCH", lambda model, method, rows: runs.append(rows))
    samples = np.concatenate([np.load(p) for p in sorted(SAMPLES.glob("*.npy"))])
    rng = np.random.default_rng(0)
    # 12 callers: batches of 1 or 2 samples, targets none, one, or one per sample.
    calls = []
    for i in range(12):
        n = 1 + i % 2
        x = (samples[rng.integers(0, len(samples), n)] + rng.normal(0, 0.3, (n, 1, 8, 8))).astype(
            np.float32
        )
        targets = [None, [int(rng.integers(10))], rng.integers(0, 10, n).tolist()][i % 3]
        calls.append((x, targets))
    got: dict[int, object] = {}
    queue = QueueLimits(max_queue=64, instances=1, max_rows=8, max_delay_s=0.2)
    with serving(tmp_path, queue) as address:
        barrier = threading.Barrier(len(calls))

        def call(i: int) -> None:
            x, targets = calls[i]
            with Client(address, timeout=30) as client:
                barrier.wait()
                got[i] = client.explain("digits", x, method="guided", targets=targets)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert max(runs) > 1, runs  # requests were merged
    assert sum(runs) == sum(len(x) for x, _ in calls) and max(runs) <= 8
    for i, (x, targets) in enumerate(calls):
        wanted = None if targets is None else np.resize(np.array(targets), len(x))
        saliency, scores, explained = direct_explain("guided", x, wanted)
        result = got[i]
        np.testing.assert_array_equal(result.targets, explained)  # type: ignore[attr-defined]
        np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)  # type: ignore[attr-defined]
        np.testing.assert_allclose(result.saliency, saliency, rtol=1e-4, atol=1e-6)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the queue's rules


class _Gate:
    """A run that waits for its gate and echoes its rows: x + 1 and the targets."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.terminated = False

    def __call__(self, key: object, x: np.ndarray, t: np.ndarray, cancel: Cancel):  # type: ignore[no-untyped-def]
        self.started.set()
        while not self.open.wait(0.01):
            if cancel.is_set:
                self.terminated = True
                raise RuntimeError("terminated")
        return [x + 1, t]


def _submit_later(queue: ModelQueue, x: np.ndarray, **kw: object) -> tuple[threading.Thread, list]:
    out: list = []

    def go() -> None:
        try:
            out.append(queue.submit("k", x, np.zeros(len(x), np.int64), **kw))  # type: ignore[arg-type]
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    return thread, out


def test_requests_wait_and_only_a_full_queue_refuses() -> None:
    gate = _Gate()
    queue = ModelQueue("m", gate, QueueLimits(max_queue=2, instances=1, max_rows=1))
    first, first_out = _submit_later(queue, np.zeros((1, 2)))
    assert gate.started.wait(5)
    waiting = [_submit_later(queue, np.full((1, 2), i)) for i in (1, 2)]
    while queue.depth() < 2:
        time.sleep(0.01)
    with pytest.raises(Overloaded, match="2 requests waiting"):
        queue.submit("k", np.zeros((1, 2)), np.zeros(1, np.int64))
    gate.open.set()
    for thread, _ in [(first, first_out), *waiting]:
        thread.join(5)
    assert [out[0][0].tolist() for _, out in waiting] == [[[2, 2]], [[3, 3]]]


def test_a_deadline_in_the_queue_is_deadline_exceeded_and_leaves_the_queue() -> None:
    gate = _Gate()
    queue = ModelQueue("m", gate, QueueLimits(max_queue=4, instances=1))
    running, _ = _submit_later(queue, np.zeros((1, 2)))
    assert gate.started.wait(5)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="waited in the queue"):
        queue.submit("k", np.zeros((1, 2)), np.zeros(1, np.int64), deadline=start + 0.2)
    assert 0.15 < time.monotonic() - start < 1.0 and queue.depth() == 0
    gate.open.set()
    running.join(5)


def test_cancelling_every_caller_of_a_run_terminates_it() -> None:
    gate = _Gate()
    queue = ModelQueue("m", gate, QueueLimits(max_queue=4, instances=1))
    callbacks: list = []

    def on_abandon(fn):  # type: ignore[no-untyped-def]
        callbacks.append(fn)
        return True

    thread, out = _submit_later(queue, np.zeros((1, 2)), on_abandon=on_abandon)
    assert gate.started.wait(5)
    callbacks[0]()  # what gRPC does when the client goes away
    thread.join(5)
    assert isinstance(out[0], Cancelled)
    deadline = time.monotonic() + 5
    while not gate.terminated and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.terminated


# ---------------------------------------------------------------- the CPU goes idle


def _slow_model(folder: Path) -> None:
    """24 3x3 convs of 32 channels at 128x128: an explain run of seconds on one thread."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(24):
        cin = 1 if i == 0 else 32
        w = rng.normal(0, np.sqrt(2 / (9 * cin)), (32, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["g"]))
    nodes.append(helper.make_node("Flatten", ["g"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 128, 128])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 32])],
        inits,
    )
    folder.mkdir(parents=True)
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx"
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_in_window(start: float, begin: float, end: float) -> float:
    """The process's CPU seconds between `begin` and `end` seconds after `start`."""
    time.sleep(max(0.0, start + begin - time.monotonic()))
    before = _cpu_seconds()
    time.sleep(max(0.0, start + end - time.monotonic()))
    return _cpu_seconds() - before


def test_deadline_and_cancellation_stop_the_run(tmp_path: Path) -> None:
    _slow_model(tmp_path / "slow")
    x = np.random.default_rng(1).standard_normal((2, 1, 128, 128)).astype(np.float32)
    request = pb.ExplainRequest(model="slow", tensor=to_tensor(x))
    with (
        serving(tmp_path, QueueLimits(instances=1)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        start = time.monotonic()
        stub.Explain(request, timeout=60)
        full = time.monotonic() - start
        if full < 1.6:  # a fast or idle machine: more rows, so the run outlasts the window
            rows = min(16, int(np.ceil(2 * 2.0 / full)))
            x = np.random.default_rng(1).standard_normal((rows, 1, 128, 128)).astype(np.float32)
            request = pb.ExplainRequest(model="slow", tensor=to_tensor(x))
            start = time.monotonic()
            stub.Explain(request, timeout=60)
            full = time.monotonic() - start
        assert full > 1.3, f"the run took {full:.2f} s: too short to show anything"
        window = (0.45, 1.05)  # well inside the run, had it gone on

        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Explain(request, timeout=0.25)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        busy_after_deadline = _cpu_in_window(start, *window)

        time.sleep(0.3)
        start = time.monotonic()
        call = stub.Explain.future(request, timeout=60)
        time.sleep(0.25)
        call.cancel()
        busy_after_cancel = _cpu_in_window(start, *window)

        # The server still answers afterwards.
        assert stub.Explain(request, timeout=60).saliency.shape == list(x.shape)
    span = window[1] - window[0]
    assert busy_after_deadline < 0.25 * span, busy_after_deadline
    assert busy_after_cancel < 0.25 * span, busy_after_cancel
