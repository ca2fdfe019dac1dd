"""server/core/batch_sizer.py: the queue's merge size follows the measured cost per row, from
timings given to it (no clock: the choices are exact)."""

from __future__ import annotations

import pytest
from onnxplain.server.core.batch_sizer import BatchSizer, bucket


def _feed(sizer: BatchSizer, key: str, seconds_for: dict[int, float], runs: int) -> list[int]:
    """Runs `runs` batches of exactly the size the sizer allows; returns those sizes."""
    sizes = []
    for _ in range(runs):
        rows = sizer.limit(key)
        sizes.append(rows)
        sizer.record(key, rows, seconds_for[bucket(rows)] * rows)
    return sizes


def test_buckets_are_powers_of_two_below_the_rows() -> None:
    assert [bucket(n) for n in (1, 2, 3, 4, 7, 8, 15, 16, 17)] == [1, 2, 2, 4, 4, 8, 8, 16, 16]


def test_every_size_is_tried_once_largest_first_then_the_cheapest_per_row_wins() -> None:
    sizer = BatchSizer(12, explore_every=0)
    per_row = {1: 5.0, 2: 4.0, 4: 3.0, 8: 2.5}  # a small model: merging pays
    assert _feed(sizer, "small", per_row, 6) == [12, 4, 2, 1, 12, 12]
    # A bucket of 8 stands for the top (12 rows): the cheapest per row.
    assert sizer.costs("small") == {8: 2.5, 4: 3.0, 2: 4.0, 1: 5.0}


def test_a_model_that_batching_slows_runs_one_request_at_a_time() -> None:
    sizer = BatchSizer(16, explore_every=0)
    per_row = {1: 1.0, 2: 1.1, 4: 1.2, 8: 1.3, 16: 1.4}  # ResNet-50 on 2 loaded cores
    assert _feed(sizer, "large", per_row, 7)[-2:] == [1, 1]
    assert _feed(sizer, "other key", {16: 0.5, 8: 1, 4: 1, 2: 1, 1: 1}, 6)[-1] == 16


def test_exploration_tries_the_neighbours_and_follows_a_change_in_cost() -> None:
    sizer = BatchSizer(16, explore_every=4)
    cheap_large = {1: 2.0, 2: 2.0, 4: 2.0, 8: 2.0, 16: 1.0}
    sizes = _feed(sizer, "k", cheap_large, 13)
    assert sizes[:5] == [16, 8, 4, 2, 1]
    assert set(sizes[5:]) == {16, 8}  # the best, and its neighbour below now and then
    # The machine gets loaded: large runs now cost more per row than single ones.
    sizes = _feed(sizer, "k", {1: 1.0, 2: 1.5, 4: 2.0, 8: 3.0, 16: 4.0}, 60)
    assert sizes[-3:] == [1, 1, 1]


def test_a_run_of_a_size_between_buckets_counts_for_the_bucket_below() -> None:
    sizer = BatchSizer(16)
    sizer.record("k", 3, 3.0)
    sizer.record("k", 3, 6.0)  # averaged with the first: 0.7 · 1 + 0.3 · 2
    assert sizer.costs("k") == {2: pytest.approx(1.3)}
    sizer.record("k", 0, 1.0)  # nothing run, nothing learned
    assert sizer.costs("k") == {2: pytest.approx(1.3)}
