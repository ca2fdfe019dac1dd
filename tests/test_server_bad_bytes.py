"""Bodies that are not requests, and tensors no model takes, over a real socket to a real
`onnxplain serve`: each is INVALID_ARGUMENT (or another client-fault status) with one log
line, never INTERNAL and never a traceback in the log."""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from onnxplain.server.ops.refusals import RefusalLog

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1.tensors import TensorError, to_array, to_tensor

from helpers.serve_process import ServeProcess
from helpers.server_support import SAMPLES, make_repository

# A fuzzed body may happen to decode into a request the server refuses for what it says
# (unknown model, wrong shape) or even a valid one; it must never be the server's fault.
CLIENT_FAULTS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
GOOD = np.load(SAMPLES / "digit3.npy")


def _absurd_tensors(rng: np.random.Generator) -> Iterator[pb.Tensor]:
    float32 = pb.DATA_TYPE_FLOAT32
    for rank in (33, 64, 65, 100, 1000):
        yield pb.Tensor(dtype=float32, shape=[1] * rank, data=b"\0" * 4)
    yield pb.Tensor(dtype=float32, shape=[0, 2**62, 2**62])
    yield pb.Tensor(dtype=float32, shape=[0, 2**63 - 1])
    yield pb.Tensor(dtype=float32, shape=[2**31, 2**31], data=b"\0" * 16)
    yield pb.Tensor(dtype=float32, shape=[-(2**63), 1], data=b"\0" * 4)
    for _ in range(40):
        shape = rng.integers(-3, 2**40, size=int(rng.integers(0, 80))).tolist()
        yield pb.Tensor(
            dtype=int(rng.integers(0, 40)),  # type: ignore[arg-type]
            shape=shape,
            data=rng.bytes(int(rng.integers(0, 64))),
        )


def _bodies(seed: int = 12) -> list[tuple[str, bytes]]:
    """(RPC, body): random bytes, bit-flipped good requests, well-formed absurd requests."""
    rng = np.random.default_rng(seed)
    explain = "/onnxplain.v1.ExplainService/Explain"
    good = pb.ExplainRequest(model="digits", tensor=to_tensor(GOOD), targets=[3])
    good = good.SerializeToString()
    bodies = [(explain, rng.bytes(int(rng.integers(0, 300)))) for _ in range(120)]
    for _ in range(120):
        flipped = bytearray(good)
        for i in rng.integers(0, len(good), size=int(rng.integers(1, 8))):
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        bodies.append((explain, bytes(flipped)))
    for tensor in _absurd_tensors(rng):
        request = pb.ExplainRequest(model="digits", tensor=tensor)
        bodies.append((explain, request.SerializeToString()))
    for rpc in ("GetModel", "ListModels"):
        path = f"/onnxplain.v1.ExplainService/{rpc}"
        bodies += [(path, rng.bytes(int(rng.integers(1, 100)))) for _ in range(10)]
    return bodies


def test_absurd_tensors_are_tensor_errors_not_numpy_crashes() -> None:
    for tensor in _absurd_tensors(np.random.default_rng(3)):
        try:
            to_array(tensor)
        except TensorError:
            continue
        # The only absurd tensors that decode are random ones that happen to be consistent.
        assert len(tensor.shape) <= 32


def test_fuzzed_bodies_are_client_faults_with_one_log_line_each(tmp_path: Path) -> None:
    bodies = _bodies()
    codes: dict[grpc.StatusCode, int] = {}
    with ServeProcess(make_repository(tmp_path), "--drain-delay", "0") as server:
        started = time.monotonic()
        with grpc.insecure_channel(server.address) as channel:
            for path, body in bodies:
                call = channel.unary_unary(path)  # raw bytes in and out: no serializers
                try:
                    call(body, timeout=30)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                    assert code in CLIENT_FAULTS, (code, exc.details(), body[:80])
                    assert "Traceback" not in (exc.details() or "")
                codes[code] = codes.get(code, 0) + 1
            # Still serving, and right.
            good = channel.unary_unary(
                "/onnxplain.v1.ExplainService/Explain",
                request_serializer=pb.ExplainRequest.SerializeToString,
                response_deserializer=pb.ExplainResponse.FromString,
            )(pb.ExplainRequest(model="digits", tensor=to_tensor(GOOD)), timeout=30)
            assert list(good.targets) == [3]
        elapsed = time.monotonic() - started
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
        log = server.log()
    # Most bodies do not decode at all; every one of those is INVALID_ARGUMENT.
    assert codes[grpc.StatusCode.INVALID_ARGUMENT] > len(bodies) // 2, codes
    assert "Traceback" not in log and "Exception deserializing" not in log
    # One short line per refused body, up to 50 per 10 s window; the rest counted.
    refused = len(bodies) - codes.get(grpc.StatusCode.OK, 0)
    lines = [line for line in log.splitlines() if " from ipv" in line]
    counted = sum(int(n) for n in re.findall(r"(\d+) more refused requests not logged", log))
    windows = 1 + int(elapsed // 10) + 1  # the bodies may straddle a window's end
    assert len(lines) + counted == refused and 50 <= len(lines) <= 50 * windows
    assert all(len(line) < 500 for line in log.splitlines())
    assert len(log.encode()) < 500 * len(lines) + 4000, len(log.encode())


@pytest.mark.parametrize("rank", [33, 65])
def test_too_many_dimensions_say_so(rank: int) -> None:
    tensor = pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[1] * rank, data=b"\0" * 4)
    with pytest.raises(TensorError, match=f"{rank} dimensions; at most 32"):
        to_array(tensor)


def test_refusal_log_keeps_a_burst_per_window_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = RefusalLog(logging.getLogger("refusals-test"), 3, 10.0, lambda: now[0])
    with caplog.at_level(logging.INFO, "refusals-test"):
        for i in range(5):
            refusals.refused("refused %d", i)
        now[0] = 10.5  # the next window: the count of the first, then a fresh burst
        refusals.refused("refused %d", 5)
        for i in range(6, 9):
            refusals.refused("refused %d", i)
        refusals.flush()
        refusals.flush()  # nothing more to say
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 1",
        "refused 2",
        "2 more refused requests not logged (over 3 lines in 10 s)",
        "refused 5",
        "refused 6",
        "refused 7",
        "1 more refused requests not logged (over 3 lines in 10 s)",
    ]
