"""ExplainRequest.output_grad through the gRPC service: a segmenter's mask seed gives the
saliency of (output * mask).sum(), as float64 autograd on the PyTorch module (vanilla) and
Captum's GuidedBackprop with that seed (guided) compute it; a seed of the wrong shape or
dtype, or one combined with a target field, is INVALID_ARGUMENT."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop
from onnxplain.server import Explainer, Repository, Service, SessionFactory
from onnxplain.server.core.batching import QueueLimits
from onnxplain.server.core.errors import DeadlineExceeded
from onnxplain.server.core.explainer import ExplainCall
from onnxplain.server.ops import hooks
from torch import nn

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.server_support import running_server
from helpers.target_models import Segmenter, images, seeded, write_model

SHAPE = (2, 3, 16, 16)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return seeded(Segmenter())


@pytest.fixture(scope="module")
def stub(
    tmp_path_factory: pytest.TempPathFactory, net: nn.Module
) -> Iterator[explain_pb2_grpc.ExplainServiceStub]:
    root: Path = tmp_path_factory.mktemp("models")
    write_model(root / "seg", net, torch.from_numpy(images(SHAPE)))
    running: tuple[Service, Explainer]
    with (
        running_server(root) as running,
        grpc.insecure_channel(f"127.0.0.1:{running[0].port}") as channel,
    ):
        yield explain_pb2_grpc.ExplainServiceStub(channel)


def mask_seed() -> np.ndarray:
    """Class 1 over a blob in sample 0, class 2 over a box in sample 1, soft edges."""
    seed = np.zeros((2, 3, 16, 16), np.float32)
    yy, xx = np.mgrid[:16, :16]
    seed[0, 1] = np.clip(1.5 - np.hypot(yy - 6, xx - 9) / 3, 0, 1)
    seed[1, 2, 3:9, 2:12] = 1.0
    return seed


def explain(
    stub: explain_pb2_grpc.ExplainServiceStub, x: np.ndarray, seed: np.ndarray, method: str
) -> pb.ExplainResponse:
    return stub.Explain(
        pb.ExplainRequest(
            model="seg", tensor=to_tensor(x), method_name=method, output_grad=to_tensor(seed)
        ),
        timeout=120,
    )


def close(got: np.ndarray, ref: np.ndarray) -> None:
    gap = np.abs(got.astype(np.float64) - ref).max()
    assert gap <= 1e-4 * np.abs(ref).max(), (gap, np.abs(ref).max())
    assert np.abs(ref).max() > 0


def test_a_mask_seed_is_the_float64_gradient_of_output_times_mask(
    stub: explain_pb2_grpc.ExplainServiceStub, net: nn.Module
) -> None:
    x, seed = images(SHAPE), mask_seed()
    reply = explain(stub, x, seed, "vanilla")
    net64 = copy.deepcopy(net).double()
    xt = torch.from_numpy(x).double().requires_grad_()
    (net64(xt) * torch.from_numpy(seed).double()).sum().backward()
    assert xt.grad is not None
    close(to_array(reply.saliency), xt.grad.numpy())
    assert list(reply.targets) == [-1, -1]
    with torch.no_grad():
        values = (net64(xt) * torch.from_numpy(seed).double()).flatten(1).sum(1).numpy()
    np.testing.assert_allclose(reply.target_scores, values, rtol=1e-4)


def test_a_mask_seed_through_guided_backprop_is_captums(
    stub: explain_pb2_grpc.ExplainServiceStub, net: nn.Module
) -> None:
    x, seed = images(SHAPE), mask_seed()
    reply = explain(stub, x, seed, "guided")

    class Seeded(nn.Module):  # one score per sample: sum(output * seed), so no target index
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return (self.net(v) * torch.from_numpy(seed).to(v.dtype)).flatten(1).sum(1)

    wrapped = copy.deepcopy(Seeded()).double()
    ref = GuidedBackprop(wrapped).attribute(torch.from_numpy(x).double())
    close(to_array(reply.saliency), ref.detach().numpy())


@pytest.mark.parametrize(
    "seed, message",
    [
        (np.zeros((2, 3, 16, 15), np.float32), "output_grad shape is [2, 3, 16, 15]"),
        (np.zeros((1, 3, 16, 16), np.float32), "batch included"),
        (np.zeros((2, 3, 16, 16), np.float64), "output_grad dtype is float64"),
        (np.full((2, 3, 16, 16), np.nan, np.float32), "non-finite"),
    ],
)
def test_a_seed_unlike_the_output_is_invalid_argument(
    stub: explain_pb2_grpc.ExplainServiceStub, seed: np.ndarray, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        explain(stub, images(SHAPE), seed, "vanilla")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(caught.value.details())


@pytest.mark.parametrize(
    "extra", [{"targets": [1]}, {"top_k": 2}, {"position": pb.PositionTarget(position=1)}]
)
def test_a_seed_with_another_target_field_is_invalid_argument(
    stub: explain_pb2_grpc.ExplainServiceStub, extra: dict[str, object]
) -> None:
    request = pb.ExplainRequest(
        model="seg", tensor=to_tensor(images(SHAPE)), output_grad=to_tensor(mask_seed()), **extra
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_grad" in str(caught.value.details())


def test_concurrent_seed_requests_merge_and_each_gets_its_own_rows(
    tmp_path: Path, net: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(tmp_path / "seg", net, torch.from_numpy(images(SHAPE)))
    runs: list[int] = []
    monkeypatch.setattr(hooks, "_BATCH", lambda model, method, rows: runs.append(rows))
    queue = QueueLimits(max_queue=16, instances=1, max_rows=8, max_delay_s=0.3)
    core = Explainer(Repository.load(tmp_path, SessionFactory("cpu", threads=1)), 8, queue=queue)
    rng = np.random.default_rng(3)
    calls = [
        (images((1 + i % 2, 3, 16, 16), seed=10 + i), rng.normal(size=(1 + i % 2, 3, 16, 16)))
        for i in range(6)
    ]
    barrier = threading.Barrier(len(calls))

    def call(x: np.ndarray, seed: np.ndarray) -> np.ndarray:
        barrier.wait()
        got = core.explain(ExplainCall("seg", x, "vanilla", output_grad=seed.astype(np.float32)))
        return got.saliency

    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda c: call(*c), calls))
    assert max(runs) > 1, runs  # seeds of several requests ran as one batch
    assert sum(runs) == sum(len(x) for x, _ in calls)
    net64 = copy.deepcopy(net).double()
    for (x, seed), got in zip(calls, answers):
        xt = torch.from_numpy(x).double().requires_grad_()
        (net64(xt) * torch.from_numpy(seed)).sum().backward()
        assert xt.grad is not None
        close(got, xt.grad.numpy())
    # Its deadline holds as any request's: one already past is not run.
    with pytest.raises(DeadlineExceeded):
        x, seed = calls[0]
        core.explain(
            ExplainCall("seg", x, output_grad=seed.astype(np.float32)),
            deadline=time.monotonic() - 1,
        )
