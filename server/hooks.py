"""Reports from the queue to the metrics module (`server.metrics`, off until enabled).

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
    method = key[0] if isinstance(key, tuple) and key else str(key)
    _BATCH(model, str(method), rows)
