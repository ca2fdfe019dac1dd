"""A detection target: find the prediction of a detector's raw head that matches a box, and
build the seed that explains its class score (and, if asked, its overlap with the box).

The match is pytorch-grad-cam's FasterRCNNBoxScoreTarget's, on the head's decoded
predictions: among those scoring at least the config's min_score, the one whose box has the
highest IoU with the requested box; it must exceed min_iou (0.5), and with a class given its
top class must be that class. Its explained scalar is its class score, plus its IoU with the
box when `explain_box` is set (pytorch-grad-cam's target sums both).

A seed is the gradient of that scalar with respect to the raw output, so a prediction whose
score is a product (YOLOv5's objectness x class) or a softmax (DETR) is explained exactly:
the saliency is d scalar / d input by the chain rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store.detection_config import DetectionConfig
from .errors import InvalidInput
from .region_targets import Box
from .seeds import BuiltSeed

DEFAULT_MIN_IOU = 0.5  # pytorch-grad-cam's iou_threshold


@dataclass(frozen=True)
class DetectionTarget:
    box: Box
    class_index: int | None = None
    explain_box: bool = False
    min_iou: float = DEFAULT_MIN_IOU


@dataclass(frozen=True)
class Detection:
    """The prediction a row explains."""

    index: int  # among the head's predictions (anchor or query)
    box: Box  # in input pixels
    class_index: int
    score: float
    iou: float


@dataclass(frozen=True)
class Predictions:
    """One sample's decoded predictions, all of them (no threshold yet)."""

    boxes: np.ndarray  # [P, 4] x0, y0, x1, y1, float64
    labels: np.ndarray  # [P] the top class
    scores: np.ndarray  # [P] its score


def decode(
    config: DetectionConfig, output: np.ndarray, boxes: np.ndarray | None, input_hw: tuple[int, int]
) -> list[Predictions]:
    """Every sample's predictions, as the config's layout reads the raw head."""
    out = output.astype(np.float64)
    if config.layout == "yolov8":
        _expect(out, 3, "[N, 4+classes, anchors]", min_features=5, axis=1)
        cxcywh, classes = out[:, :4].transpose(0, 2, 1), out[:, 4:].transpose(0, 2, 1)
    elif config.layout == "yolov5":
        _expect(out, 3, "[N, anchors, 5+classes]", min_features=6, axis=2)
        cxcywh, classes = out[:, :, :4], out[:, :, 4:5] * out[:, :, 5:]
    else:
        _expect(out, 3, "[N, queries, classes+1]", min_features=2, axis=2)
        if boxes is None or boxes.shape != (*out.shape[:2], 4):
            got = None if boxes is None else list(boxes.shape)
            raise InvalidInput(f"the detector's boxes output is {got}; expected [N, queries, 4]")
        classes = _softmax(out)[:, :, :-1]  # the last class is "no object"
        scale = np.array([input_hw[1], input_hw[0], input_hw[1], input_hw[0]], np.float64)
        cxcywh = boxes.astype(np.float64) * scale
    xyxy = np.concatenate(
        [cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1
    )
    labels = classes.argmax(axis=2)
    scores = np.take_along_axis(classes, labels[..., None], axis=2)[..., 0]
    return [Predictions(xyxy[n], labels[n], scores[n]) for n in range(len(out))]


def detection_seed(
    target: DetectionTarget,
    config: DetectionConfig,
    output: np.ndarray,
    boxes: np.ndarray | None,
    input_hw: tuple[int, int],
) -> BuiltSeed:
    """The seed explaining, in each sample, the prediction that matches `target`."""
    target.box.check()
    if target.explain_box and config.layout == "detr":
        raise InvalidInput(
            "explain_box needs the boxes in the explained output; a 'detr' layout's are another "
            "output"
        )
    if not 0 <= target.min_iou < 1:
        raise InvalidInput(f"min_iou is {target.min_iou}; it must be in [0, 1)")
    wanted = np.array([target.box.x0, target.box.y0, target.box.x1, target.box.y1])
    seed = np.zeros(output.shape, dtype=np.float64)
    found, values = [], []
    for n, predictions in enumerate(decode(config, output, boxes, input_hw)):
        detection = _match(target, wanted, predictions, config.min_score, n)
        found.append(detection)
        values.append(detection.score + (detection.iou if target.explain_box else 0.0))
        _seed_score(config.layout, output, seed, n, detection)
        if target.explain_box:
            _seed_iou(
                config.layout, seed, n, detection.index, predictions.boxes[detection.index], wanted
            )
    classes = np.array([d.class_index for d in found], np.int64)
    return BuiltSeed(seed.astype(output.dtype), classes, np.array(values), list(found))


def _match(
    target: DetectionTarget, wanted: np.ndarray, p: Predictions, min_score: float, n: int
) -> Detection:
    candidates = np.flatnonzero(p.scores >= min_score)
    if not candidates.size:
        raise InvalidInput(f"sample {n}: no prediction scores at least {min_score} (min_score)")
    ious = _iou(wanted, p.boxes[candidates])
    best = int(candidates[int(np.argmax(ious))])  # the first of equal IoUs, as torch's argmax
    iou = float(ious.max())
    if not iou > target.min_iou:
        raise InvalidInput(
            f"sample {n}: no prediction overlaps the box by more than IoU {target.min_iou} "
            f"(the best: {iou:.3f})"
        )
    label = int(p.labels[best])
    if target.class_index is not None and label != target.class_index:
        raise InvalidInput(
            f"sample {n}: the prediction best overlapping the box is of class {label}, not "
            f"{target.class_index}"
        )
    x0, y0, x1, y1 = (float(v) for v in p.boxes[best])
    return Detection(best, Box(x0, y0, x1, y1), label, float(p.scores[best]), iou)


def _seed_score(layout: str, output: np.ndarray, seed: np.ndarray, n: int, d: Detection) -> None:
    """Adds d score / d output for prediction `d` of sample `n`."""
    out = output.astype(np.float64)
    a, c = d.index, d.class_index
    if layout == "yolov8":
        seed[n, 4 + c, a] += 1.0
    elif layout == "yolov5":  # objectness x class
        seed[n, a, 4] += out[n, a, 5 + c]
        seed[n, a, 5 + c] += out[n, a, 4]
    else:  # softmax over the query's logits: d p_c = p_c (e_c - p)
        p = _softmax(out[n, a])
        seed[n, a] += p[c] * (np.eye(len(p))[c] - p)


def _seed_iou(
    layout: str, seed: np.ndarray, n: int, a: int, box: np.ndarray, wanted: np.ndarray
) -> None:
    """Adds d IoU(box, wanted) / d (cx, cy, w, h) at prediction `a`'s box coordinates."""
    x0, y0, x1, y1 = box
    gx0, gy0, gx1, gy1 = wanted
    iw, ih = min(x1, gx1) - max(x0, gx0), min(y1, gy1) - max(y0, gy0)
    if iw <= 0 or ih <= 0:
        return  # no overlap: IoU is 0 nearby
    inter = iw * ih
    union = (x1 - x0) * (y1 - y0) + (gx1 - gx0) * (gy1 - gy0) - inter
    # d inter and d area of the predicted box, by x0, y0, x1, y1; the intersection moves
    # with a side only where that side is the inner one.
    d_inter = np.array(
        [-ih * (x0 > gx0), -iw * (y0 > gy0), ih * (x1 < gx1), iw * (y1 < gy1)], np.float64
    )
    d_area = np.array([-(y1 - y0), -(x1 - x0), y1 - y0, x1 - x0])
    d_xyxy = (d_inter * union - inter * (d_area - d_inter)) / union**2
    # x0 = cx - w/2, x1 = cx + w/2 (and y alike)
    d_cxcywh = np.array(
        [
            d_xyxy[0] + d_xyxy[2],
            d_xyxy[1] + d_xyxy[3],
            (d_xyxy[2] - d_xyxy[0]) / 2,
            (d_xyxy[3] - d_xyxy[1]) / 2,
        ]
    )
    if layout == "yolov8":
        seed[n, :4, a] += d_cxcywh
    else:
        seed[n, a, :4] += d_cxcywh


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = (box[2] - box[0]) * (box[3] - box[1]) + area - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _expect(out: np.ndarray, ndim: int, layout: str, min_features: int, axis: int) -> None:
    if out.ndim != ndim or out.shape[axis] < min_features:
        raise InvalidInput(
            f"the detector's output is {list(out.shape)}; its config's layout reads {layout}"
        )
