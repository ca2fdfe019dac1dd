"""The page's JSON endpoints as plain functions: parameters in, core called, a dict out.

Nothing here knows about HTTP either: errors are the core's own (`server.errors`), and
`httpd` maps them to status codes in one place, as `app.STATUS_OF` does for gRPC.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
from onnxplain.graph_rewrite import METHODS

from ..errors import InvalidInput
from ..explainer import ExplainCall, Explainer, Explanation
from ..repository import FailedModel

# How many of the best classes the page lists when the request does not say.
DEFAULT_TOP = 5
MAX_TOP = 100


def list_models(core: Explainer) -> dict[str, Any]:
    """What the page's model picker needs: names, whether they load, methods, labels."""
    models = []
    for name in core.repository.names():
        entry = core.repository.entry(name)
        if isinstance(entry, FailedModel):
            models.append({"name": name, "available": False, "error": entry.error})
            continue
        config = entry.config
        models.append(
            {
                "name": name,
                "available": True,
                "takes_images": config.preprocessing is not None,
                "input": str(entry.input),
                "output": str(entry.output),
                "classes": entry.output.classes,
                "labels": list(config.labels),
                "methods": list(METHODS),
                "default_method": config.default_method,
            }
        )
    return {"models": models}


def explain(core: Explainer, params: Mapping[str, str], image: bytes) -> dict[str, Any]:
    """Explain one uploaded image: the map of one class and the model's best classes."""
    model = params.get("model", "")
    if not model:
        raise InvalidInput("no model given; pick one of the models the page lists")
    if not image:
        raise InvalidInput("the upload is empty; choose a PNG or JPEG image")
    target = _optional_int(params, "target", "the target class")
    top = _optional_int(params, "top", "the number of top classes")
    top = DEFAULT_TOP if top is None else top
    if not 1 <= top <= MAX_TOP:
        raise InvalidInput(f"top must be between 1 and {MAX_TOP}; got {top}")
    result = core.explain(
        ExplainCall(
            model=model,
            input=image,
            method=params.get("method") or None,
            targets=() if target is None else (target,),
            heatmap=True,
        )
    )
    labels = core.repository.get(model).config.labels
    return _explanation_view(result, labels, top)


def _explanation_view(result: Explanation, labels: tuple[str, ...], top: int) -> dict[str, Any]:
    scores = result.scores[0].reshape(-1).astype(np.float64)
    probabilities = _softmax(scores)
    best = np.argsort(-scores, kind="stable")[:top]
    target = int(result.targets[0])

    def row(index: int) -> dict[str, Any]:
        return {
            "index": index,
            "label": labels[index] if index < len(labels) else str(index),
            "score": float(scores[index]),
            "probability": float(probabilities[index]),
        }

    png = result.heatmap_png or b""
    return {
        "method": result.method,
        "target": row(target),
        "top": [row(int(i)) for i in best],
        "overlay_png": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
    }


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Probabilities of the explained scores, read as logits (the default explained output)."""
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


def _optional_int(params: Mapping[str, str], key: str, what: str) -> int | None:
    value = params.get(key, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number; got {value!r}") from None
