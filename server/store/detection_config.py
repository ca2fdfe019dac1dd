"""A detector's [detection] table in config.toml: how its raw head lays out predictions.

[detection]
layout = "yolov8"     # [N, 4+classes, anchors]: cx, cy, w, h in input pixels, class scores
                      # "yolov5": [N, anchors, 5+classes]: cx, cy, w, h, objectness, classes
                      #           (a prediction's class score is objectness x class)
                      # "detr":   the explained output [N, queries, classes+1] logits (the
                      #           last: no object), boxes from `boxes`
boxes = "pred_boxes"  # detr: the output [N, queries, 4] of cx, cy, w, h as fractions of
                      # the input's width and height
min_score = 0.25      # predictions scoring less are never matched to a requested box
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..core.errors import ConfigError

LAYOUTS = ("yolov8", "yolov5", "detr")


@dataclass(frozen=True)
class DetectionConfig:
    layout: str
    boxes: str | None = None
    min_score: float = 0.25


def detection_config(raw: Any) -> DetectionConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("config.toml: detection must be a table, [detection]")
    known = {f.name for f in fields(DetectionConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"config.toml: unknown key {unknown[0]} in [detection]; it takes {', '.join(known)}"
        )
    layout = raw.get("layout")
    if layout not in LAYOUTS:
        raise ConfigError(f"config.toml: [detection] layout {layout!r} is not one of {LAYOUTS}")
    boxes = raw.get("boxes")
    if (layout == "detr") != isinstance(boxes, str):
        raise ConfigError(
            "config.toml: [detection] boxes (a string) names the boxes output of layout "
            "'detr', and only of it"
        )
    score = raw.get("min_score", 0.25)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise ConfigError(f"config.toml: [detection] min_score must be in [0, 1], not {score!r}")
    return DetectionConfig(layout, boxes, float(score))
