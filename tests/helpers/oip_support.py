"""Shared by the serving-protocol tests (Open Inference Protocol, KServe V1): one core behind
both ports, as `onnxplain serve --http` runs it, and tritonclient run from its own venv.

tritonclient pins protobuf 6 and the server needs 7, so the client runs in .venv-triton
(made by scripts/test) as a separate process: tests/tritonclient/client.py, which prints
what it saw as JSON and saves the arrays it got as .npy files.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxplain.server import Explainer, Limits, Repository, SessionFactory, build_server
from onnxplain.server.ops.security import Security
from onnxplain.server.protocols.web.httpd import start_web_page

from helpers.tools import require

ROOT = Path(__file__).resolve().parents[2]
TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
CLIENT = ROOT / "tests" / "tritonclient" / "client.py"


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    core: Explainer

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"


@contextmanager
def serving(root: Path, security: Security | None = None, max_batch: int = 16) -> Iterator[Ports]:
    """The gRPC port and the --http port over one core, on 127.0.0.1."""
    core = Explainer(Repository.load(root, SessionFactory("cpu", threads=1)), max_batch, 4)
    service = build_server(core, "127.0.0.1", 0, Limits(1 << 22, 4), security=security)
    page = start_web_page(core, "127.0.0.1", 0, security=security)
    try:
        yield Ports(service.port, page.port, core)
    finally:
        page.stop()
        service.server.stop(None).wait()


def run_tritonclient(*args: str, timeout: float = 120) -> dict[str, Any]:
    """tests/tritonclient/client.py with .venv-triton's python; its JSON report."""
    require(
        "tritonclient",
        TRITON_PYTHON.exists(),
        "scripts/test makes .venv-triton: python3 -m venv .venv-triton && .venv-triton/bin/pip "
        "install -c tests/tritonclient/constraints.txt 'tritonclient[grpc,http]==2.73.0'",
    )
    run = subprocess.run(
        [str(TRITON_PYTHON), str(CLIENT), *args], capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
