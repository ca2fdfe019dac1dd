"""A box target on a YOLOv8-layout detector ([N, 4+classes, anchors]) and a YOLOv5-layout one
([N, anchors, 5+classes]) explains the prediction pytorch-grad-cam 1.5.7's
FasterRCNNBoxScoreTarget picks on the same raw outputs (decoded to boxes, labels and scores,
those under the config's min_score left out, as a detector's post-processing would), and
its saliency is float64 autograd's of that target's score: the class score alone
(explain_box unset: the boxes detached in the reference), or IoU + score (explain_box)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from torch import nn

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.pytorch_grad_cam_import import pytorch_grad_cam
from helpers.server_support import running_server
from helpers.target_models import YoloV8Head, images, seeded, write_model
from helpers.torchvision_stub import torchvision_module

SHAPE = (1, 3, 32, 32)
MIN_SCORE = 0.3


class YoloV5Head(nn.Module):
    """The same head laid out as YOLOv5's: [N, anchors, cx cy w h obj classes]."""

    def __init__(self, v8: nn.Module) -> None:
        super().__init__()
        self.v8 = v8
        self.obj = nn.Conv2d(3, 1, 8, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.v8(x)
        obj = torch.sigmoid(self.obj(x).flatten(2))
        return torch.cat([out[:, :4], obj, out[:, 4:]], dim=1).transpose(1, 2)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torchvision.ops.box_iou (the stubbed torchvision lacks it), as documented: the IoU of
    every pair of [x0, y0, x1, y1] boxes, [len(a), len(b)]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def grad_cam_target(labels: list[int], boxes: np.ndarray, iou_threshold: float) -> Any:
    grad_cam = pytorch_grad_cam()
    torchvision_module("ops").box_iou = box_iou
    return grad_cam.utils.model_targets.FasterRCNNBoxScoreTarget(labels, boxes, iou_threshold)


def decoded(out: torch.Tensor, layout: str, detach_boxes: bool) -> dict[str, torch.Tensor]:
    """One sample's raw head as pytorch-grad-cam's model_outputs: boxes (x0 y0 x1 y1),
    labels and scores of the predictions scoring at least MIN_SCORE."""
    if layout == "yolov8":
        cxcywh, classes = out[:4].T, out[4:].T
    else:
        cxcywh, classes = out[:, :4], out[:, 4:5] * out[:, 5:]
    if detach_boxes:
        cxcywh = cxcywh.detach()
    boxes = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
    scores, labels = classes.max(1)
    keep = torch.nonzero(scores >= MIN_SCORE)[:, 0]
    return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep], "keep": keep}


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    # Small weights: scores inside the sigmoid's slope, not saturated at 1.
    v8 = seeded(YoloV8Head(), seed=2, std=0.15)
    return {"yolov8": v8, "yolov5": seeded(YoloV5Head(copy.deepcopy(v8)), seed=2, std=0.15)}


@pytest.fixture(scope="module")
def stub(
    tmp_path_factory: pytest.TempPathFactory, nets: dict[str, nn.Module]
) -> Iterator[explain_pb2_grpc.ExplainServiceStub]:
    root: Path = tmp_path_factory.mktemp("models")
    for layout, net in nets.items():
        config = f'[detection]\nlayout = "{layout}"\nmin_score = {MIN_SCORE}\n'
        write_model(root / layout, net, torch.from_numpy(images(SHAPE)), config)
    with (
        running_server(root) as running,
        grpc.insecure_channel(f"127.0.0.1:{running[0].port}") as channel,
    ):
        yield explain_pb2_grpc.ExplainServiceStub(channel)


def request_box(
    net: nn.Module, x: np.ndarray, layout: str, shift: tuple[float, ...] = (1, -0.5, 1.5, 0.5)
) -> np.ndarray:
    """The best-scoring prediction's box, shifted (half a cell across: two overlap it)."""
    with torch.no_grad():
        found = decoded(net(torch.from_numpy(x))[0], layout, True)
    best = int(found["scores"].argmax())
    return found["boxes"][best].numpy().astype(np.float64) + np.array(shift, np.float64)


@pytest.mark.parametrize("layout", ["yolov8", "yolov5"])
@pytest.mark.parametrize("explain_box", [False, True])
@pytest.mark.parametrize(
    "shift, min_iou", [((1, -0.5, 1.5, 0.5), 0.5), ((3.6, 0.3, 3.6, 0.2), 0.1)]
)
def test_a_box_explains_the_prediction_grad_cams_box_target_picks(
    stub: explain_pb2_grpc.ExplainServiceStub,
    nets: dict[str, nn.Module],
    layout: str,
    explain_box: bool,
    shift: tuple[float, ...],
    min_iou: float,
) -> None:
    x = images(SHAPE, seed=7)
    net = nets[layout]
    box = request_box(net, x, layout, shift)
    x0, y0, x1, y1 = (float(v) for v in box)
    reply = stub.Explain(
        pb.ExplainRequest(
            model=layout,
            tensor=to_tensor(x),
            method_name="vanilla",
            detection=pb.DetectionTarget(
                box=pb.Box(x0=x0, y0=y0, x1=x1, y1=y1), explain_box=explain_box, min_iou=min_iou
            ),
        ),
        timeout=120,
    )
    (detection,) = reply.detections
    assert detection.iou > min_iou

    # The reference: grad-cam's target on the float64 module's raw output.
    net64 = copy.deepcopy(net).double()
    xt = torch.from_numpy(x).double().requires_grad_()
    out = net64(xt)
    out.retain_grad()
    outputs = decoded(out[0], layout, detach_boxes=not explain_box)
    label = int(
        outputs["labels"][box_iou(torch.from_numpy(box)[None], outputs["boxes"].detach()).argmax()]
    )
    score = grad_cam_target([label], box[None], min_iou)(outputs)
    score.sum().backward()
    assert xt.grad is not None and out.grad is not None
    # The prediction grad-cam explained: the one whose score its gradient reaches.
    touched = out.grad[0] if layout == "yolov5" else out.grad[0].T
    (picked,) = torch.nonzero(touched[:, 4:].abs().sum(1))[:, 0].tolist()
    assert detection.index == picked
    assert detection.class_index == label == reply.targets[0]
    assert float(score.detach()) > 0  # grad-cam found it too (0: no match)
    value = float(score.detach())
    # grad-cam's scalar is IoU + score either way; only its gradient differs.
    np.testing.assert_allclose(detection.score + detection.iou, value, rtol=1e-4)
    explained = value - (0 if explain_box else detection.iou)
    np.testing.assert_allclose(reply.target_scores[0], explained, rtol=1e-4)
    ref = xt.grad.numpy()
    gap = np.abs(to_array(reply.saliency).astype(np.float64) - ref).max()
    assert np.abs(ref).max() > 0 and gap <= 1e-4 * np.abs(ref).max(), (gap, np.abs(ref).max())


@pytest.mark.parametrize(
    "target, message",
    [
        ({"class_index": 2, "min_iou": 0.99}, "by more than IoU 0.99"),
        ({"explain_box": True, "min_iou": 1.5}, "min_iou is 1.5"),
    ],
)
def test_no_match_is_invalid_argument_with_the_reason(
    stub: explain_pb2_grpc.ExplainServiceStub,
    nets: dict[str, nn.Module],
    target: dict[str, Any],
    message: str,
) -> None:
    x = images(SHAPE, seed=7)
    x0, y0, x1, y1 = (float(v) for v in request_box(nets["yolov8"], x, "yolov8"))
    request = pb.ExplainRequest(
        model="yolov8",
        tensor=to_tensor(x),
        detection=pb.DetectionTarget(box=pb.Box(x0=x0, y0=y0, x1=x1, y1=y1), **target),
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(caught.value.details())


def test_a_class_other_than_the_matched_predictions_is_refused(
    stub: explain_pb2_grpc.ExplainServiceStub, nets: dict[str, nn.Module]
) -> None:
    x = images(SHAPE, seed=7)
    x0, y0, x1, y1 = (float(v) for v in request_box(nets["yolov8"], x, "yolov8"))
    box = pb.Box(x0=x0, y0=y0, x1=x1, y1=y1)
    found = stub.Explain(
        pb.ExplainRequest(
            model="yolov8", tensor=to_tensor(x), detection=pb.DetectionTarget(box=box)
        ),
        timeout=60,
    ).detections[0]
    other = (found.class_index + 1) % 3
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(
            pb.ExplainRequest(
                model="yolov8",
                tensor=to_tensor(x),
                detection=pb.DetectionTarget(box=box, class_index=other),
            ),
            timeout=60,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"is of class {found.class_index}, not {other}" in str(caught.value.details())


class DetrHead(nn.Module):
    """DETR's output contract on a tiny backbone: 8 queries, logits over 3 classes + "no
    object", and sigmoid boxes (cx, cy, w, h as fractions of the input)."""

    def __init__(self, queries: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.logits = nn.Linear(32, queries * (classes + 1))
        self.boxes = nn.Linear(32, queries * 4)
        self.shape = (queries, classes + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x).flatten(1)
        boxes = torch.sigmoid(self.boxes(f)).reshape(len(x), self.shape[0], 4)
        return self.logits(f).reshape(len(x), *self.shape), boxes


@pytest.fixture(scope="module")
def detr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[nn.Module, Any]]:
    net = seeded(DetrHead(), seed=4, std=0.5)
    folder = tmp_path_factory.mktemp("detr") / "models" / "detr"
    folder.mkdir(parents=True)
    torch.onnx.export(
        net,
        (torch.from_numpy(images(SHAPE)),),
        str(folder / "model.onnx"),
        input_names=["image"],
        output_names=["logits", "pred_boxes"],
        dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}, "pred_boxes": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    (folder / "config.toml").write_text(
        'output = "logits"\n[detection]\nlayout = "detr"\nboxes = "pred_boxes"\nmin_score = 0.1\n'
    )
    with (
        running_server(folder.parent) as running,
        grpc.insecure_channel(f"127.0.0.1:{running[0].port}") as channel,
    ):
        yield net, explain_pb2_grpc.ExplainServiceStub(channel)


def test_a_detr_layout_explains_the_query_grad_cams_box_target_picks(
    detr: tuple[nn.Module, Any],
) -> None:
    net, stub = detr
    x = images(SHAPE, seed=8)
    xt = torch.from_numpy(x).double().requires_grad_()
    logits, boxes = copy.deepcopy(net).double()(xt)
    probs = torch.softmax(logits[0], -1)[:, :-1]  # the last class: no object
    cxcywh = boxes[0].detach() * 32
    xyxy = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
    scores, labels = probs.max(1)
    keep = torch.nonzero(scores >= 0.1)[:, 0]
    best = int(keep[scores[keep].argmax()])
    w, h = cxcywh[best, 2:].tolist()  # moved by a few percent of its size: IoU about 0.9
    box = xyxy[best].numpy() + np.array([0.05 * w, -0.03 * h, 0.04 * w, 0.02 * h])
    outputs = {"boxes": xyxy[keep], "labels": labels[keep], "scores": scores[keep]}
    pick = int(keep[box_iou(torch.from_numpy(box)[None], outputs["boxes"]).argmax()])
    score = grad_cam_target([int(labels[pick])], box[None], 0.5)(outputs)
    score.sum().backward()
    assert xt.grad is not None
    x0, y0, x1, y1 = (float(v) for v in box)
    reply = stub.Explain(
        pb.ExplainRequest(
            model="detr",
            tensor=to_tensor(x),
            method_name="vanilla",
            detection=pb.DetectionTarget(box=pb.Box(x0=x0, y0=y0, x1=x1, y1=y1)),
        ),
        timeout=120,
    )
    (detection,) = reply.detections
    assert detection.index == pick and detection.class_index == int(labels[pick])
    ref = xt.grad.numpy()
    gap = np.abs(to_array(reply.saliency).astype(np.float64) - ref).max()
    assert np.abs(ref).max() > 0 and gap <= 1e-4 * np.abs(ref).max(), (gap, np.abs(ref).max())
    with pytest.raises(grpc.RpcError) as caught:  # its boxes are another output
        reply = stub.Explain(
            pb.ExplainRequest(
                model="detr",
                tensor=to_tensor(x),
                detection=pb.DetectionTarget(
                    box=pb.Box(x0=x0, y0=y0, x1=x1, y1=y1), explain_box=True
                ),
            ),
            timeout=60,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "explain_box needs the boxes in the explained output" in str(caught.value.details())


@pytest.mark.parametrize(
    "table, message",
    [
        ('layout = "ssd"', "layout 'ssd' is not one of"),
        ('layout = "detr"', "boxes (a string) names the boxes output"),
        ('layout = "yolov8"\nboxes = "b"', "boxes (a string) names the boxes output"),
        ('layout = "yolov8"\nmin_score = 2', "min_score must be in [0, 1]"),
        ('layout = "yolov8"\nlayuot = "x"', "unknown key layuot in [detection]"),
    ],
)
def test_a_bad_detection_table_is_a_config_error(tmp_path: Path, table: str, message: str) -> None:
    from onnxplain.server.core.errors import ConfigError
    from onnxplain.server.store.config import load_config

    (tmp_path / "config.toml").write_text(f"[detection]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert message in str(caught.value)
