"""ExplainRequest's seed and targets beyond a class (output_grad, region, position,
detection) to the core's, and the explained detections back to the wire."""

from __future__ import annotations

import numpy as np

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1.tensors import to_array

from ...core.detection import DEFAULT_MIN_IOU, Detection, DetectionTarget
from ...core.errors import InvalidInput
from ...core.explainer import SeedTarget
from ...core.region_targets import Box, PositionTarget, RegionTarget

_KINDS = ("region", "position", "detection")


def decode_output_grad(request: pb.ExplainRequest) -> np.ndarray | None:
    return to_array(request.output_grad) if request.HasField("output_grad") else None


def decode_target(request: pb.ExplainRequest) -> SeedTarget | None:
    given = [k for k in _KINDS if request.HasField(k)]
    if len(given) > 1:
        raise InvalidInput(f"give one of region, position and detection, not {' and '.join(given)}")
    if not given:
        return None
    if given[0] == "region":
        return _region(request.region)
    if given[0] == "position":
        p = request.position
        return PositionTarget(p.position, p.class_index if p.HasField("class_index") else None)
    d = request.detection
    if not d.HasField("box"):
        raise InvalidInput("a detection target needs its box")
    return DetectionTarget(
        box=decode_box(d.box),
        class_index=d.class_index if d.HasField("class_index") else None,
        explain_box=d.explain_box,
        min_iou=d.min_iou if d.HasField("min_iou") else DEFAULT_MIN_IOU,
    )


def _region(region: pb.RegionTarget) -> RegionTarget:
    area = region.WhichOneof("area")
    classes = list(region.classes)
    if area == "mask_png":
        return RegionTarget(mask_png=region.mask_png, classes=classes)
    if area == "mask":
        return RegionTarget(mask=to_array(region.mask), classes=classes)
    if area == "box":
        return RegionTarget(box=decode_box(region.box), classes=classes)
    raise InvalidInput("a region target needs a mask_png, a mask or a box")


def decode_box(box: pb.Box) -> Box:
    return Box(box.x0, box.y0, box.x1, box.y1)


def encode_detection(d: Detection) -> pb.Detection:
    return pb.Detection(
        index=d.index,
        box=pb.Box(x0=d.box.x0, y0=d.box.y0, x1=d.box.x1, y1=d.box.y1),
        class_index=d.class_index,
        score=d.score,
        iou=d.iou,
    )
