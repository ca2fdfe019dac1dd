"""Reports from the queue to the metrics module, where there is one.

`server.metrics` (the operations part) offers `observe_queue_depth(model, depth)` and
`observe_batch(model, method, size)`; this file calls them when they exist, so the queue
works the same with or without metrics.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable
from typing import Any


def _hook(name: str) -> Callable[..., Any] | None:
    try:
        metrics = importlib.import_module(f"{__package__}.metrics")
    except ImportError:
        return None
    return getattr(metrics, name, None)


_QUEUE_DEPTH = _hook("observe_queue_depth")
_BATCH = _hook("observe_batch")


def queue_depth(model: str, depth: int) -> None:
    if _QUEUE_DEPTH is not None:
        _QUEUE_DEPTH(model, depth)


def batch_size(model: str, key: Hashable, rows: int) -> None:
    if _BATCH is not None:
        # The explainer's keys name their method; any other key is its own label.
        _BATCH(model, str(getattr(key, "method", key)), rows)
