"""How many rows a model's queue merges into one run, chosen from the runs' own timings.

Merging requests pays off only where a run of n rows costs less than n runs of one: true
of small models, not always of a large one on few CPU cores (ResNet-50 served 0.77x the
throughput with batching on 2 loaded cores). So the queue measures instead of assuming:
each run's seconds per row is kept per key (method, parameters, sample shape) and per
size bucket (1, 2, 4, ... rows), as a moving average, and merges stop at the bucket that
measured cheapest. Every bucket is tried once before it is judged, largest first; after
that, one run in `explore_every` tries the bucket next to the best, so a change in load
(or a first measurement taken on a busy machine) is corrected.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

# Weight of the newest run in a bucket's moving average: a few runs settle it, one
# outlier does not decide it.
_NEWEST = 0.3


def bucket(rows: int) -> int:
    """The size bucket of a run: the largest power of two not above `rows`."""
    return 1 << (max(1, rows).bit_length() - 1)


class BatchSizer:
    """Per key, the largest number of rows worth merging into one run."""

    def __init__(self, max_rows: int, explore_every: int = 16) -> None:
        self.max_rows = max_rows
        self.explore_every = explore_every
        self._buckets = [1 << i for i in range(max(1, max_rows).bit_length())]
        self._cost: dict[Hashable, dict[int, float]] = {}  # key → bucket → s/row
        self._runs: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def limit(self, key: Hashable) -> int:
        """Rows to merge at most for the next run of `key`."""
        with self._lock:
            cost = self._cost.get(key, {})
            untried = [b for b in self._buckets if b not in cost]
            if untried:
                return self._rows(untried[-1])
            best = min(self._buckets, key=lambda b: (cost[b], -b))
            runs = self._runs.get(key, 0)
            if self.explore_every and runs % self.explore_every == self.explore_every - 1:
                i = self._buckets.index(best)
                # Alternate between the neighbours above and below the best.
                step = 1 if (runs // self.explore_every) % 2 == 0 else -1
                j = min(max(i + step, 0), len(self._buckets) - 1)
                return self._rows(self._buckets[j])
            return self._rows(best)

    def record(self, key: Hashable, rows: int, seconds: float) -> None:
        """One run of `rows` rows of `key` took `seconds`."""
        if rows < 1 or seconds <= 0:
            return
        b = min(bucket(rows), self._buckets[-1])
        with self._lock:
            cost = self._cost.setdefault(key, {})
            per_row = seconds / rows
            old = cost.get(b)
            cost[b] = per_row if old is None else (1 - _NEWEST) * old + _NEWEST * per_row
            self._runs[key] = self._runs.get(key, 0) + 1

    def costs(self, key: Hashable) -> dict[int, float]:
        """Seconds per row by bucket, as measured so far (for metrics and tests)."""
        with self._lock:
            return dict(self._cost.get(key, {}))

    def _rows(self, b: int) -> int:
        # The top bucket stands for every size up to max_rows.
        return self.max_rows if b == self._buckets[-1] else b
