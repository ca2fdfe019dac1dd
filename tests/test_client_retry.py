"""The client sends a call again when it fails UNAVAILABLE, and only then, for a bounded time.

The real thing, a server killed and restarted under a client's calls, is in
test_client_restart.py.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from onnxplain.client.client import Retry, call_with_retries


class _Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class _Flaky:
    """A stand-in RPC that fails with `failures` in turn, then answers."""

    def __init__(self, *failures: grpc.StatusCode) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        self.calls += 1
        if self.failures:
            raise _Failure(self.failures.pop(0))
        return ("answer", request, timeout)


FAST = Retry(total_s=1.0, first_s=0.001, max_wait_s=0.001)


def test_unavailable_is_retried_until_an_answer() -> None:
    rpc = _Flaky(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert call_with_retries(rpc, "req", 5.0, FAST) == ("answer", "req", 5.0)  # type: ignore[arg-type]
    assert rpc.calls == 3


def test_retries_stop_when_the_time_is_spent() -> None:
    rpc = _Flaky(*[grpc.StatusCode.UNAVAILABLE] * 10_000)
    retry = Retry(total_s=0.3, first_s=0.01, factor=2.0, max_wait_s=0.08)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        call_with_retries(rpc, "req", 5.0, retry)  # type: ignore[arg-type]
    spent = time.monotonic() - started
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # Waits of 0.01, 0.02, 0.04, then 0.08 each (times 0.5-1 jitter) fit 6 to 13 tries in 0.3 s.
    assert 5 <= rpc.calls <= 14 and 0.1 < spent < 0.6, (rpc.calls, spent)


def test_no_retry_budget_means_one_attempt() -> None:
    rpc = _Flaky(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError):
        call_with_retries(rpc, "req", 5.0, Retry(total_s=0))  # type: ignore[arg-type]
    assert rpc.calls == 1


def test_waits_grow_exponentially_up_to_the_cap() -> None:
    waits = Retry(first_s=0.1, factor=2.0, max_wait_s=1.0).waits()
    drawn = [next(waits) for _ in range(8)]
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for wait, cap in zip(drawn, caps):
        assert cap / 2 <= wait <= cap


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_other_errors_are_not_retried(code: grpc.StatusCode) -> None:
    rpc = _Flaky(code)
    with pytest.raises(grpc.RpcError):
        call_with_retries(rpc, "req", 5.0, FAST)  # type: ignore[arg-type]
    assert rpc.calls == 1
