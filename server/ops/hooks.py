"""Reports from the queue to the metrics module (`server/ops/metrics.py`, off until enabled).

The queue calls these two names, which tests may replace to watch it.
"""

from __future__ import annotations

from collections.abc import Hashable

from . import metrics

_QUEUE_DEPTH = metrics.observe_queue_depth
_BATCH = metrics.observe_batch


def queue_depth(model: str, depth: int) -> None:
    _QUEUE_DEPTH(model, depth)


def batch_size(model: str, key: Hashable, rows: int) -> None:
    # The explainer's keys name their method; any other key is its own label.
    _BATCH(model, str(getattr(key, "method", key)), rows)
