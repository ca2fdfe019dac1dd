"""The client sends a call again when it fails UNAVAILABLE, and only then."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from onnxplain.client.client import call_with_retries


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

    def __call__(self, request: Any, timeout: float | None = None) -> Any:
        self.calls += 1
        if self.failures:
            raise _Failure(self.failures.pop(0))
        return ("answer", request, timeout)


def test_unavailable_is_retried_until_an_answer() -> None:
    rpc = _Flaky(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert call_with_retries(rpc, "req", 5.0, backoff_s=0) == ("answer", "req", 5.0)  # type: ignore[arg-type]
    assert rpc.calls == 3


def test_retries_stop_after_the_last_attempt() -> None:
    rpc = _Flaky(*[grpc.StatusCode.UNAVAILABLE] * 3)
    with pytest.raises(grpc.RpcError) as raised:
        call_with_retries(rpc, "req", 5.0, attempts=3, backoff_s=0)  # type: ignore[arg-type]
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and rpc.calls == 3


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
def test_other_errors_are_not_retried(code: grpc.StatusCode) -> None:
    rpc = _Flaky(code)
    with pytest.raises(grpc.RpcError):
        call_with_retries(rpc, "req", 5.0, backoff_s=0)  # type: ignore[arg-type]
    assert rpc.calls == 1
