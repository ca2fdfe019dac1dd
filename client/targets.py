"""Targets beyond a class, client side: a region of a dense output, a position of a sequence
output, a detection of a detector's head; the server builds each into the seed. And the
text forms the CLI and the web page take for them (`box:X0,Y0,X1,Y1`, `mask:FILE`, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1.tensors import to_tensor

BoxLike = tuple[float, float, float, float]  # x0, y0, x1, y1 in the model input's pixels


@dataclass(frozen=True)
class Region:
    """Classes (empty: all) summed over a mask or a box of a dense output [N, C, H, W].

    `mask`: a float array [H, W] (or [N, H, W]), the bytes of a PNG, or a path to a .png
    or .npy file; `box` instead: x0, y0, x1, y1 in input pixels."""

    mask: np.ndarray | bytes | str | Path | None = None
    box: BoxLike | None = None
    classes: Sequence[int] = ()


@dataclass(frozen=True)
class Position:
    """One step of a sequence output [N, T, C]; `class_index` None: the step's top class."""

    position: int
    class_index: int | None = None


@dataclass(frozen=True)
class DetectionBox:
    """The detector's prediction best overlapping `box` (see DetectionTarget in the proto)."""

    box: BoxLike
    class_index: int | None = None
    explain_box: bool = False
    min_iou: float | None = None


Target = Region | Position | DetectionBox


@dataclass(frozen=True)
class ExplainedDetection:
    """The prediction a detection target explained."""

    index: int
    box: BoxLike
    class_index: int
    score: float
    iou: float


def set_target(request: pb.ExplainRequest, target: Target) -> None:
    if isinstance(target, Region):
        region = request.region
        region.classes.extend(int(c) for c in target.classes)
        if (target.mask is None) == (target.box is None):
            raise ValueError("a Region needs a mask or a box, not both")
        if target.box is not None:
            region.box.CopyFrom(_box(target.box))
        elif isinstance(target.mask, np.ndarray):
            region.mask.CopyFrom(to_tensor(np.asarray(target.mask, np.float32)))
        elif isinstance(target.mask, bytes):
            region.mask_png = target.mask
        elif target.mask is not None and Path(target.mask).suffix.lower() == ".npy":
            region.mask.CopyFrom(to_tensor(np.load(target.mask).astype(np.float32)))
        elif target.mask is not None:
            region.mask_png = Path(target.mask).read_bytes()
    elif isinstance(target, Position):
        request.position.position = target.position
        if target.class_index is not None:
            request.position.class_index = target.class_index
    else:
        request.detection.box.CopyFrom(_box(target.box))
        request.detection.explain_box = target.explain_box
        if target.class_index is not None:
            request.detection.class_index = target.class_index
        if target.min_iou is not None:
            request.detection.min_iou = target.min_iou


def decode_detections(response: pb.ExplainResponse) -> list[ExplainedDetection]:
    return [
        ExplainedDetection(
            d.index, (d.box.x0, d.box.y0, d.box.x1, d.box.y1), d.class_index, d.score, d.iou
        )
        for d in response.detections
    ]


def parse_target(text: str) -> Target:
    """A target from text, as the CLI's --explain takes it:

    region:box:X0,Y0,X1,Y1[:CLASSES]    classes summed over a box (CLASSES: 1,2; none: all)
    region:mask:FILE[:CLASSES]          over a mask PNG or .npy
    position:T[:CLASS]                  step T of a sequence output
    detection:X0,Y0,X1,Y1[:CLASS][:box] the detection best overlapping the box (box: also
                                        explain its IoU with it)
    """
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind == "region" and len(parts) in (2, 3) and parts[0] in ("box", "mask"):
            classes = _ints(parts[2]) if len(parts) == 3 else ()
            if parts[0] == "box":
                return Region(box=_box_text(parts[1]), classes=classes)
            return Region(mask=Path(parts[1]), classes=classes)
        if kind == "position" and len(parts) in (1, 2):
            return Position(int(parts[0]), int(parts[1]) if len(parts) == 2 else None)
        if kind == "detection" and 1 <= len(parts) <= 3:
            flags = parts[1:]
            explain_box = "box" in flags
            named = [f for f in flags if f != "box"]
            if len(named) > 1:
                raise ValueError
            return DetectionBox(_box_text(parts[0]), int(named[0]) if named else None, explain_box)
    except ValueError:
        pass
    raise ValueError(f"cannot read the target {text!r}; {parse_target.__doc__}")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip())


def _box_text(text: str) -> BoxLike:
    values = [float(p) for p in text.split(",")]
    if len(values) != 4:
        raise ValueError
    return values[0], values[1], values[2], values[3]


def _box(box: BoxLike) -> pb.Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    return pb.Box(x0=x0, y0=y0, x1=x1, y1=y1)
