"""What deploy/README.md says about gRPC load balancing, shown with two real servers.

One target that resolves to two addresses (as a Kubernetes headless Service's DNS name does):
gRPC's default policy, pick_first, sends every call down one connection, so a connection-level
balancer pins the client to one pod; round_robin spreads the calls over both.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from onnxplain.client import Client, Retry
from onnxplain.server import Explainer, Limits, Repository, SessionFactory, build_server

from helpers.server_support import DEMO

CALLS = 20


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two servers that each name their one model after themselves; the target has both."""
    services = []
    for name in ("pod-a", "pod-b"):
        root = tmp_path_factory.mktemp(name)
        shutil.copytree(DEMO, root / name, ignore=shutil.ignore_patterns("samples"))
        core = Explainer(Repository.load(Path(root), SessionFactory("cpu", threads=1)), 1, 1)
        services.append(build_server(core, "127.0.0.1", 0, Limits(1 << 20, 1)))
    try:
        yield "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in services)
    finally:
        for s in services:
            s.server.stop(None).wait()


def _who_answers(target: str, **options: str) -> Counter[str]:
    with Client(target, retry=Retry(total_s=0), channel_options=list(options.items())) as c:
        return Counter(c.models()[0].name for _ in range(CALLS))


def test_default_policy_pins_the_client_to_one_server(two_servers: str) -> None:
    answers = _who_answers(two_servers)
    assert len(answers) == 1 and sum(answers.values()) == CALLS


def test_round_robin_spreads_calls_over_every_server(two_servers: str) -> None:
    answers = _who_answers(two_servers, **{"grpc.lb_policy_name": "round_robin"})
    # Exactly alternating once both connections are up; the first calls may all go to the
    # address that connected first.
    assert set(answers) == {"pod-a", "pod-b"} and min(answers.values()) >= CALLS // 4, answers
