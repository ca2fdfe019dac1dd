"""The page's targets beyond a class, from its query: a box drawn on the image explains a
region of a dense output (`region_box`, with `region_classes`, empty: all; or a painted
`region_mask`, a PNG as a base64 data URL, in the input's pixels) or a detector's
prediction (`detection_box`, `detection_class`); `position` (and `position_class`) one step
of a sequence output. And the detector's own top predictions, which the page offers to pick
from. Boxes are in the model input's pixels (the page scales what was drawn)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...core.detection import DetectionTarget, decode
from ...core.errors import InvalidInput
from ...core.explainer import Explanation, SeedTarget
from ...core.region_targets import Box, PositionTarget, RegionTarget
from ...store.repository import LoadedModel

# Detections the page lists for picking, best first.
TOP_DETECTIONS = 5
_KEYS = ("region_box", "region_mask", "detection_box", "position")
_DATA_URL = "data:image/png;base64,"


def target_from_query(params: Mapping[str, str]) -> SeedTarget | None:
    given = [k for k in _KEYS if params.get(k, "").strip()]
    if len(given) > 1:
        raise InvalidInput(f"give one of {', '.join(_KEYS)}, not {' and '.join(given)}")
    if not given:
        return None
    if given[0] in ("region_box", "region_mask"):
        classes = _ints(params.get("region_classes", ""), "region_classes")
        if given[0] == "region_mask":
            return RegionTarget(mask_png=_png(params["region_mask"]), classes=classes)
        return RegionTarget(box=_box(params["region_box"]), classes=classes)
    if given[0] == "detection_box":
        chosen = _ints(params.get("detection_class", ""), "detection_class")
        return DetectionTarget(_box(params["detection_box"]), chosen[0] if chosen else None)
    step = _ints(params["position"], "position")
    chosen = _ints(params.get("position_class", ""), "position_class")
    return PositionTarget(step[0], chosen[0] if chosen else None)


def kinds(model: LoadedModel) -> list[str]:
    """Which targets the page offers for this model, from its output's rank and config."""
    if model.config.detection is not None:
        return ["detection"]
    rank = len(model.output.shape)
    return {4: ["region"], 3: ["position"]}.get(rank, [])


def top_detections(
    model: LoadedModel, result: Explanation, hw: tuple[int, int]
) -> list[dict[str, Any]]:
    """The detector's best predictions on the first sample, one per place (a prediction
    overlapping a better one by IoU over 0.5 is left out), for the page to pick from."""
    config = model.config.detection
    if config is None or config.layout == "detr":  # detr's boxes are another output
        return []
    try:
        (found, *_) = decode(config, result.scores[:1], None, hw)
    except InvalidInput:
        return []
    order = np.argsort(-found.scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if found.scores[i] < config.min_score or len(kept) == TOP_DETECTIONS:
            break
        if all(_iou(found.boxes[i], found.boxes[k]) <= 0.5 for k in kept):
            kept.append(int(i))
    return [
        {
            "index": i,
            "box": [float(v) for v in found.boxes[i]],
            "class": int(found.labels[i]),
            "score": float(found.scores[i]),
        }
        for i in kept
    ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def _png(text: str) -> bytes:
    data = text.strip()
    data = data[len(_DATA_URL) :] if data.startswith(_DATA_URL) else data
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidInput("region_mask must be a PNG in base64 (a data: URL)") from None


def _box(text: str) -> Box:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InvalidInput(f"a box is x0,y0,x1,y1 in input pixels; got {text!r}")
    return Box(*values)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidInput(f"{what} must be whole numbers; got {text!r}") from None
