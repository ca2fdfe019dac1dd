"""Region and position targets through the gRPC service: the server builds the seed, and the
saliency is float64 autograd's of the target's scalar on the PyTorch module: a segmenter's
class (or all classes) summed over a mask PNG, a mask tensor or a box, as pytorch-grad-cam's
SemanticSegmentationTarget sums it; a recogniser's class at one step. Bad regions and
positions are INVALID_ARGUMENT with a message that says what was wrong."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.oracle import float64_gradient
from helpers.pytorch_grad_cam_import import pytorch_grad_cam
from helpers.server_support import running_server
from helpers.target_models import Recogniser, Segmenter, images, seeded, write_model

SEG_SHAPE = (2, 3, 16, 16)
SEQ_SHAPE = (2, 3, 16, 32)


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    return {"seg": seeded(Segmenter()), "ocr": seeded(Recogniser(), seed=1)}


@pytest.fixture(scope="module")
def stub(
    tmp_path_factory: pytest.TempPathFactory, nets: dict[str, nn.Module]
) -> Iterator[explain_pb2_grpc.ExplainServiceStub]:
    root: Path = tmp_path_factory.mktemp("models")
    write_model(root / "seg", nets["seg"], torch.from_numpy(images(SEG_SHAPE)))
    write_model(root / "ocr", nets["ocr"], torch.from_numpy(images(SEQ_SHAPE)))
    with (
        running_server(root) as running,
        grpc.insecure_channel(f"127.0.0.1:{running[0].port}") as channel,
    ):
        yield explain_pb2_grpc.ExplainServiceStub(channel)


def png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def close(got: pb.Tensor, ref: np.ndarray) -> None:
    gap = np.abs(to_array(got).astype(np.float64) - ref).max()
    assert np.abs(ref).max() > 0
    assert gap <= 1e-4 * np.abs(ref).max(), (gap, np.abs(ref).max())


def region(
    stub: explain_pb2_grpc.ExplainServiceStub, x: np.ndarray, target: pb.RegionTarget
) -> pb.ExplainResponse:
    request = pb.ExplainRequest(
        model="seg", tensor=to_tensor(x), method_name="vanilla", region=target
    )
    return stub.Explain(request, timeout=120)


def segmentation_target(category: int, mask: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's SemanticSegmentationTarget, per sample of the batch."""
    target = pytorch_grad_cam().utils.model_targets.SemanticSegmentationTarget(category, mask)
    return lambda out: torch.stack([target(o) for o in out])


def test_a_class_over_a_mask_png_is_grad_cams_segmentation_target(
    stub: explain_pb2_grpc.ExplainServiceStub, nets: dict[str, nn.Module]
) -> None:
    x = images(SEG_SHAPE)
    mask = np.zeros((16, 16))
    mask[4:11, 3:9] = 255
    mask[2, 12] = 128
    reply = region(stub, x, pb.RegionTarget(mask_png=png(mask), classes=[1]))
    close(reply.saliency, float64_gradient(nets["seg"], x, segmentation_target(1, mask / 255.0)))
    assert list(reply.targets) == [1, 1]


def test_a_mask_png_of_another_size_is_resized_nearest(
    stub: explain_pb2_grpc.ExplainServiceStub, nets: dict[str, nn.Module]
) -> None:
    x = images(SEG_SHAPE)
    big = np.random.default_rng(5).integers(0, 2, (32, 32)) * 255
    reply = region(stub, x, pb.RegionTarget(mask_png=png(big), classes=[2]))
    small = big[1::2, 1::2] / 255.0  # the pixel under each output cell's centre
    close(reply.saliency, float64_gradient(nets["seg"], x, segmentation_target(2, small)))


def test_all_classes_over_a_per_sample_mask_tensor(
    stub: explain_pb2_grpc.ExplainServiceStub, nets: dict[str, nn.Module]
) -> None:
    x = images(SEG_SHAPE)
    masks = np.random.default_rng(6).random((2, 16, 16)).astype(np.float32)
    reply = region(stub, x, pb.RegionTarget(mask=to_tensor(masks)))
    weights = torch.from_numpy(masks).double()[:, None]
    close(
        reply.saliency,
        float64_gradient(nets["seg"], x, lambda out: (out * weights).flatten(1).sum(1)),
    )
    assert list(reply.targets) == [-1, -1]


def test_a_box_takes_the_output_cells_whose_centres_it_covers(
    stub: explain_pb2_grpc.ExplainServiceStub, nets: dict[str, nn.Module]
) -> None:
    x = images(SEG_SHAPE)
    box = pb.Box(x0=2, y0=3, x1=10, y1=9)
    reply = region(stub, x, pb.RegionTarget(box=box, classes=[0, 2]))
    mask = np.zeros((16, 16))
    mask[3:9, 2:10] = 1
    seg0, seg2 = segmentation_target(0, mask), segmentation_target(2, mask)
    close(reply.saliency, float64_gradient(nets["seg"], x, lambda out: seg0(out) + seg2(out)))
    with torch.no_grad():
        out = copy.deepcopy(nets["seg"]).double()(torch.from_numpy(x).double())
        values = (seg0(out) + seg2(out)).numpy()
    np.testing.assert_allclose(reply.target_scores, values, rtol=1e-4)


def test_a_position_explains_one_step_of_a_sequence(
    stub: explain_pb2_grpc.ExplainServiceStub, nets: dict[str, nn.Module]
) -> None:
    x = images(SEQ_SHAPE)
    request = pb.ExplainRequest(
        model="ocr",
        tensor=to_tensor(x),
        method_name="vanilla",
        position=pb.PositionTarget(position=5, class_index=3),
    )
    reply = stub.Explain(request, timeout=120)
    close(reply.saliency, float64_gradient(nets["ocr"], x, lambda out: out[:, 5, 3]))
    # Unset class: each sample's top class at that step.
    request.position.ClearField("class_index")
    reply = stub.Explain(request, timeout=120)
    with torch.no_grad():
        top = nets["ocr"](torch.from_numpy(x))[:, 5].argmax(1)
    assert list(reply.targets) == top.tolist()
    close(
        reply.saliency, float64_gradient(nets["ocr"], x, lambda out: out[torch.arange(2), 5, top])
    )


@pytest.mark.parametrize(
    "model, field, message",
    [
        ("seg", {"region": pb.RegionTarget(classes=[1])}, "needs a mask_png, a mask or a box"),
        ("seg", {"region": pb.RegionTarget(box=pb.Box(x0=5, y0=1, x1=2, y1=4))}, "is empty"),
        (
            "seg",
            {"region": pb.RegionTarget(box=pb.Box(x0=30, y0=30, x1=40, y1=40))},
            "covers no cell",
        ),
        (
            "seg",
            {"region": pb.RegionTarget(box=pb.Box(x0=1, y0=1, x1=4, y1=4), classes=[3])},
            "class 3 is out of range",
        ),
        ("seg", {"region": pb.RegionTarget(mask_png=b"not a png")}, "not a readable PNG"),
        (
            "seg",
            {"region": pb.RegionTarget(mask=to_tensor(np.ones((3, 4, 4), np.float32)))},
            "must be [H, W] or [2, H, W]",
        ),
        ("seg", {"position": pb.PositionTarget(position=1)}, "needs a sequence output [N, T, C]"),
        ("ocr", {"position": pb.PositionTarget(position=8)}, "position 8 is out of range"),
        (
            "ocr",
            {"position": pb.PositionTarget(position=1, class_index=5)},
            "class 5 is out of range",
        ),
        (
            "ocr",
            {"region": pb.RegionTarget(box=pb.Box(x0=1, y0=1, x1=4, y1=4))},
            "needs a dense output",
        ),
        (
            "seg",
            {"region": pb.RegionTarget(box=pb.Box(x0=1, y0=1, x1=4, y1=4)), "targets": [1]},
            "combines with no targets",
        ),
        (
            "seg",
            {"detection": pb.DetectionTarget(box=pb.Box(x0=1, y0=1, x1=4, y1=4))},
            "has no [detection] layout",
        ),
    ],
)
def test_bad_regions_and_positions_are_invalid_argument(
    stub: explain_pb2_grpc.ExplainServiceStub, model: str, field: dict[str, object], message: str
) -> None:
    x = images(SEG_SHAPE if model == "seg" else SEQ_SHAPE)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(pb.ExplainRequest(model=model, tensor=to_tensor(x), **field), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(caught.value.details())
