"""Signals to a real `onnxplain serve` under load: SIGTERM and SIGINT start the drain
whichever thread receives them, SIGHUP and --poll reload the repository.

The kernel hands a process-directed signal to any thread that does not block it; tgkill(2)
lets the test choose the thread, so every kind of thread (gRPC's, the executor's,
onnxruntime's, the main one) is tried, not just the ones the kernel happens to pick.
ONNXPLAIN_SIGNAL_RUNS sets how many runs the load test makes (default 4).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_tensor

from helpers.serve_process import ServeProcess, health, list_models, wait_for
from helpers.server_support import DEMO, SAMPLES

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RUNS = int(os.environ.get("ONNXPLAIN_SIGNAL_RUNS", "4"))
X = np.load(SAMPLES / "digit5.npy")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(DEMO, tmp_path / "models" / "digits")
    return tmp_path / "models"


class Load:
    """Client threads that keep Explain calls in flight until the server goes away; each
    call's (start, end, status) is kept."""

    def __init__(self, address: str, threads: int = 4) -> None:
        self.calls: list[tuple[float, float, grpc.StatusCode]] = []
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(address)
        self._stub = explain_pb2_grpc.ExplainServiceStub(self._channel)
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    @property
    def ok(self) -> int:
        return sum(code == grpc.StatusCode.OK for _, _, code in list(self.calls))

    def _loop(self) -> None:
        request = pb.ExplainRequest(model="digits", tensor=to_tensor(np.repeat(X, 4, axis=0)))
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._stub.Explain(request, timeout=30)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            self.calls.append((started, time.monotonic(), code))  # list.append is atomic
            if code == grpc.StatusCode.UNAVAILABLE and "shutting down" not in details:
                return  # the server has stopped listening

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self._channel.close()


DRAIN_DELAY = 1.5


def _health_or_none(address: str) -> int | None:
    try:
        return health(address)
    except grpc.RpcError:
        return None  # stopped already


def _stop_under_load(repo: Path, run: int) -> None:
    sig = (signal.SIGTERM, signal.SIGINT)[run % 2]
    with ServeProcess(repo, "--drain-delay", str(DRAIN_DELAY), "--grace", "20") as server:
        load = Load(server.address)
        try:
            wait_for(lambda: load.ok >= 20, 30, "20 answered calls")
            others = sorted(t for t in server.threads() if t != server.proc.pid)
            signalled = time.monotonic()
            # Odd runs: the kernel picks. Even runs: a thread other than the main one, a
            # different one each run (the main one's turn is in the next test).
            if run % 2:
                server.signal(sig)
            else:
                server.signal_thread(others[(run // 2) % len(others)], sig)
            # The drain starts at once: health turns NOT_SERVING while calls still finish.
            wait_for(
                lambda: _health_or_none(server.address) == NOT_SERVING,
                DRAIN_DELAY - 0.1,
                "NOT_SERVING",
            )
            # And it ends on its own: the old main loop lost the signal and never exited.
            code = server.wait(20)
        finally:
            load.close()
        log = server.log()
    assert code == 0, log
    assert f"{signal.Signals(sig).name} received" in log and "stopped" in log, log
    assert "Traceback" not in log
    calls = sorted(load.calls)
    # Every call in flight when the signal came, and those made early in the drain delay,
    # was answered (the server stops taking calls only after the delay).
    early = [c for c in calls if c[0] < signalled + DRAIN_DELAY / 3]
    assert all(code == grpc.StatusCode.OK for _, _, code in early), early[-5:]
    assert any(end > signalled and code == grpc.StatusCode.OK for _, end, code in calls)
    # Later calls were refused as a client retries: UNAVAILABLE (the gate, then a closed
    # port), or CANCELLED from gRPC itself for one that arrives during its final stop().
    late = {code for start, _, code in calls if start >= signalled + DRAIN_DELAY / 3}
    assert late <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


@pytest.mark.slow  # one server start per run: about 3 s each on a quiet machine
def test_stop_signals_drain_under_load_whatever_thread_gets_them(repo: Path) -> None:
    for run in range(RUNS):
        _stop_under_load(repo, run)


def test_a_signal_to_any_kind_of_thread_is_acted_on(repo: Path) -> None:
    """SIGHUP to each kind of thread in turn (main, gRPC's pollers and timer, the executor's
    workers), each followed by its reload; then SIGTERM to a worker thread drains."""
    with ServeProcess(repo, "--drain-delay", "0") as server:
        list_models(server.address)  # starts an executor worker too
        kinds: dict[str, int] = {}
        for tid, name in sorted(server.threads().items()):
            kinds.setdefault("main" if tid == server.proc.pid else name, tid)
        assert len(kinds) >= 4, kinds  # main, a worker, gRPC's event engine and timer at least
        for i, (kind, tid) in enumerate(kinds.items()):
            folder = repo / f"model{i}"
            shutil.copytree(DEMO, repo / f".model{i}")
            (repo / f".model{i}").rename(folder)
            server.signal_thread(tid, signal.SIGHUP)
            wait_for(
                lambda i=i: f"model{i}" in list_models(server.address),
                15,
                f"the reload after SIGHUP to the {kind!r} thread",
            )
        workers = [t for t in server.threads() if t != server.proc.pid]
        server.signal_thread(max(workers), signal.SIGTERM)
        assert server.wait(15) == 0
        assert server.log().count("SIGHUP: reloading") == len(kinds)


def test_sighup_reloads_and_the_server_keeps_serving(repo: Path) -> None:
    with ServeProcess(repo, "--drain-delay", "0") as server:
        shutil.copytree(DEMO, repo / ".added")
        (repo / ".added").rename(repo / "added")
        # Any thread: the reload must not depend on the main thread catching it.
        worker = max(server.threads())
        server.signal_thread(worker, signal.SIGHUP)
        wait_for(lambda: "added" in list_models(server.address), 15, "the new model")
        assert list_models(server.address)["added"].available
        assert server.proc.poll() is None and health(server.address) != NOT_SERVING
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
        log = server.log()
    assert "SIGHUP: reloading" in log and "reload: added added" in log


def test_poll_reloads_without_a_signal(repo: Path) -> None:
    with ServeProcess(repo, "--drain-delay", "0", "--poll", "0.2") as server:
        shutil.rmtree(repo / "digits")
        wait_for(lambda: "digits" not in list_models(server.address), 15, "the removal")
        shutil.copytree(DEMO, repo / ".again")
        (repo / ".again").rename(repo / "again")
        wait_for(lambda: "again" in list_models(server.address), 15, "the new model")
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
        log = server.log()
    assert "model digits removed" in log and "reload: added again" in log


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_poll_must_be_positive(repo: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from onnxplain.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--models", str(repo), "--poll", value])
    assert info.value.code == 2 and "positive number of seconds" in capsys.readouterr().err


def test_a_second_stop_signal_cuts_the_drain_short(repo: Path) -> None:
    with ServeProcess(repo, "--drain-delay", "60", "--grace", "60") as server:
        server.signal(signal.SIGTERM)
        wait_for(lambda: health(server.address) == NOT_SERVING, 15, "NOT_SERVING")
        server.signal(signal.SIGINT)
        assert server.wait(15) == 0  # not the 60 s drain delay
        assert "second stop signal" in server.log()


def _catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (bit 0 of /proc's SigCgt mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_a_stop_signal_during_start_up_is_kept_until_serving(repo: Path) -> None:
    import subprocess
    import sys
    import tempfile

    for i in range(3):  # several models, so that the signal lands while they load
        shutil.copytree(DEMO, repo / f"more{i}")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onnxplain", "serve", "--models", str(repo), "--port", "0",
             "--threads", "1", "--drain-delay", "0"],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: _catches_sighup(proc.pid), 30, "the signal handlers")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        log.seek(0)
        text = log.read().decode()
    # Not killed half-built (-15): it finished starting, then drained and exited cleanly.
    assert proc.returncode == 0, text
    assert "listening on" in out and "SIGTERM received" in text and "stopped" in text
