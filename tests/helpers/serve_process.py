"""`onnxplain serve` as a real subprocess, for tests of what only a process shows: signals,
the main thread's loop, the whole log."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc

# tgkill(2): the one way to send a signal to one chosen thread of another process.
_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


class ServeProcess:
    """A started server; `port` once it listens, `log()` once it has exited."""

    def __init__(self, repo: Path, *flags: str) -> None:
        # The log goes to a file, not a pipe: a pipe nobody reads fills and blocks the server.
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onnxplain",
                "serve",
                "--models",
                str(repo),
                "--port",
                "0",
                "--threads",
                "1",
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the server prints it once it listens
        if "listening on 127.0.0.1:" not in line:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"no listening line: {line!r}\n{self.log()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.address = f"127.0.0.1:{self.port}"

    def threads(self) -> dict[int, str]:
        """Thread id -> kernel thread name, the main thread included."""
        found = {}
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                found[int(tid)] = Path(f"/proc/{self.proc.pid}/task/{tid}/comm").read_text().strip()
            except OSError:
                continue  # the thread ended meanwhile
        return found

    def signal_thread(self, tid: int, sig: int) -> None:
        """Deliver `sig` to one thread, as the kernel may pick any thread for a process signal."""
        assert _SYS_TGKILL is not None, f"tgkill number unknown on {platform.machine()}"
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(_SYS_TGKILL, self.proc.pid, tid, sig) != 0:
            raise OSError(ctypes.get_errno(), f"tgkill({tid}, {sig}) failed")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the process is still running after `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def health(address: str, timeout: float = 5) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status


def list_models(address: str) -> dict[str, pb.ModelInfo]:
    with grpc.insecure_channel(address) as channel:
        response = explain_pb2_grpc.ExplainServiceStub(channel).ListModels(
            pb.ListModelsRequest(), timeout=10
        )
    return {m.name: m for m in response.models}


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
