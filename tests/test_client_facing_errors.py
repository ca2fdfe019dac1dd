"""What a client is told when there is nothing to talk to, nothing served, or its own string
is absurd:

- no server at the address: `onnxplain models`/`explain` give up after a few seconds (not
  10 s and more) with one message naming the address and how to start a server;
- a server with no model: `onnxplain models` says so and exits 1 (it printed nothing, 0);
- a 1 MB model name: NOT_FOUND with the name cut short (it came back whole, and the answer
  no longer fit gRPC's headers: RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from onnxplain.client import Client, Retry, ServerUnreachable, ServiceError
from onnxplain.server.core.errors import MAX_MESSAGE_BYTES, bounded, shown

from onnxplain.cli import main
from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc

from helpers.server_support import SAMPLES, make_repository, running_server


def _unused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


# --- no server --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["models", "explain"])
def test_no_server_is_one_clear_message(command: str, tmp_path: Path, capsys: Any) -> None:
    address = _unused_address()
    argv = [command, "--server", address]
    if command == "explain":
        argv += ["--model", "digits", str(SAMPLES / "digit3.png"), "-o", str(tmp_path / "o.npy")]
    started = time.monotonic()
    assert main(argv) == 1
    spent = time.monotonic() - started
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (
        f"onnxplain {command}: could not reach an onnxplain server at {address} "
        "(Connection refused).\nStart one with `bash scripts/serve` (the demo models) or "
        "`onnxplain serve --models DIR`, or point --server (or $ONNXPLAIN_SERVER) at a "
        "running one.\n"
    )
    # Retry.first_contact_s (3 s) of retries, not total_s (10 s); generous for loaded hosts.
    assert spent < Retry.total_s, spent


def test_retry_for_still_sets_how_long_a_first_contact_waits(capsys: Any) -> None:
    started = time.monotonic()
    assert main(["models", "--server", _unused_address(), "--retry-for", "0"]) == 1
    assert time.monotonic() - started < Retry.first_contact_s
    assert "could not reach an onnxplain server" in capsys.readouterr().err


REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
    "Failed to connect to remote host: Connection refused"
)


class _Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return REFUSED


class _Rpc:
    """A stand-in RPC: raises the queued codes in turn, then answers."""

    def __init__(self, *codes: grpc.StatusCode) -> None:
        self.codes = list(codes)
        self.calls = 0

    def __call__(self, request: Any, timeout: Any = None, metadata: Any = None) -> Any:
        self.calls += 1
        if self.codes:
            raise _Failure(self.codes.pop(0))
        return "answer"


def test_the_short_budget_holds_only_until_a_server_has_answered() -> None:
    """Restarts (tests/test_client_restart.py) keep the full 10 s: once a server answered,
    UNAVAILABLE means it is restarting, not that none is there."""
    fast = Retry(total_s=5.0, first_s=0.001, max_wait_s=0.001, first_contact_s=0.0)
    with Client(_unused_address(), retry=fast) as client:
        never = _Rpc(grpc.StatusCode.UNAVAILABLE)
        with pytest.raises(ServerUnreachable) as raised:
            client._call(never, None)  # type: ignore[arg-type]
        assert never.calls == 1  # first contact: no retry budget
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        assert raised.value.reason == "Connection refused"
        assert client._call(_Rpc(), None) == "answer"  # type: ignore[arg-type]
        restarting = _Rpc(*[grpc.StatusCode.UNAVAILABLE] * 5)
        assert client._call(restarting, None) == "answer"  # type: ignore[arg-type]
        assert restarting.calls == 6
        gone = _Rpc(*[grpc.StatusCode.UNAVAILABLE] * 10**6)
        fast_gone = Retry(total_s=0.05, first_s=0.001, max_wait_s=0.001, first_contact_s=0.0)
        client.retry = fast_gone
        with pytest.raises(ServiceError) as lost:
            client._call(gone, None)  # type: ignore[arg-type]
        # A server that answered before and then went away is UNAVAILABLE, not "no server".
        assert not isinstance(lost.value, ServerUnreachable) and gone.calls > 1


def test_a_wrong_code_before_any_answer_is_not_called_unreachable() -> None:
    client = Client(_unused_address(), retry=Retry(total_s=0))
    with client, pytest.raises(ServiceError) as raised:
        client._call(_Rpc(grpc.StatusCode.UNAUTHENTICATED), None)  # type: ignore[arg-type]
    assert not isinstance(raised.value, ServerUnreachable)


# --- no model ---------------------------------------------------------------------------------


def test_models_against_an_empty_server_says_so_and_fails(tmp_path: Path, capsys: Any) -> None:
    with running_server(tmp_path) as (service, _):
        assert main(["models", "--server", f"127.0.0.1:{service.port}"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert f"the server at 127.0.0.1:{service.port} serves no models" in out.err
    assert "<name>/model.onnx" in out.err and "reload" in out.err


# --- absurd strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["m" * 1_000_000, "a b " * 250_000, "\U0001f600" * 300_000],
    ids=["word", "words", "emoji"],
)
def test_a_huge_model_name_is_not_found_with_the_name_cut(tmp_path: Path, name: str) -> None:
    with (
        running_server(make_repository(tmp_path), max_message_bytes=8 << 20) as (service, _),
        grpc.insecure_channel(
            f"127.0.0.1:{service.port}", options=[("grpc.max_send_message_length", 8 << 20)]
        ) as channel,
    ):
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        for call in (
            lambda: stub.GetModel(pb.GetModelRequest(name=name), timeout=30),
            lambda: stub.Explain(pb.ExplainRequest(model=name, image=b"x"), timeout=30),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
            details = raised.value.details() or ""
            assert details.startswith("no model named '") and "…" in details
            assert len(details.encode()) <= MAX_MESSAGE_BYTES
        # And the server is fine.
        assert [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models]


def test_bounded_leaves_ordinary_messages_alone_and_cuts_long_ones() -> None:
    ordinary = "input shape is [1, 3, 8, 8]; model input 'input' takes float32[N, 1, 8, 8]"
    assert bounded(ordinary) == ordinary
    cut = bounded(f"no model named {'x' * 5000!r}; ListModels gives the names")
    assert cut == f"no model named '{'x' * 98}… ListModels gives the names"
    long_words = bounded("word " * 10_000 + "the hint")
    assert len(long_words.encode()) <= MAX_MESSAGE_BYTES and long_words.endswith("the hint")
    assert shown("y" * 500) == "'" + "y" * 98 + "…" and shown("ok") == "'ok'"
