"""Latency of an explain model against its forward model, measured so that both see the
same machine.

On a shared machine the speed drifts by 10% within minutes, and timing one model after the
other moved ResNet-50's ratio between 2.5 and 2.9 from run to run. So the two are timed in
alternation, a forward run then an explain run, then the other way round, and the ratio
reported is the median of the pairs' ratios, with its interquartile range; that stayed
within ±0.03 from run to run.

A measurement stops after its number of pairs, or earlier once its time budget is spent
(but never before `least` pairs), so that a run on a busy machine still ends in minutes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    """Forward and explain latencies in seconds; pairs when `paired`, else two series."""

    forward: list[float]
    explain: list[float]
    paired: bool = True

    @property
    def forward_ms(self) -> float:
        return 1e3 * statistics.median(self.forward)

    @property
    def explain_ms(self) -> float:
        return 1e3 * statistics.median(self.explain)

    def ratios(self) -> list[float]:
        if not self.paired:
            return [statistics.median(self.explain) / statistics.median(self.forward)]
        return [e / f for f, e in zip(self.forward, self.explain)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios())

    @property
    def quartiles(self) -> tuple[float, float] | None:
        ratios = self.ratios()
        if len(ratios) < 2:
            return None
        q = statistics.quantiles(ratios, n=4)
        return q[0], q[2]

    def ratio_text(self) -> str:
        """The ratio, its interquartile range and the number of pairs: "2.67 (2.60–2.75) ×30"."""
        q = self.quartiles
        spread = "" if q is None else f" ({q[0]:.2f}–{q[1]:.2f})"
        return f"{self.ratio:.2f}{spread} ×{len(self.forward)}"


def seconds_of(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def series(
    fn: Callable[[], object], warmup: int, most: int, budget_s: float = float("inf"), least: int = 1
) -> list[float]:
    """Latencies of `fn` after `warmup` untimed runs: `most` of them, or fewer (at least
    `least`) when `budget_s` seconds are spent first."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    times: list[float] = []
    while len(times) < most and (len(times) < least or time.perf_counter() - start < budget_s):
        times.append(seconds_of(fn))
    return times


def in_alternation(
    forward: Callable[[], object],
    explain: Callable[[], object],
    warmup: int,
    most: int,
    budget_s: float = float("inf"),
    least: int = 1,
) -> Paired:
    """Pairs forward-then-explain and explain-then-forward by turns: `most` of them, or
    fewer (at least `least`) when `budget_s` seconds are spent first."""
    for _ in range(warmup):
        forward()
        explain()
    fwd: list[float] = []
    exp: list[float] = []
    start = time.perf_counter()
    while len(fwd) < most and (len(fwd) < least or time.perf_counter() - start < budget_s):
        if len(fwd) % 2 == 0:
            fwd.append(seconds_of(forward))
            exp.append(seconds_of(explain))
        else:
            exp.append(seconds_of(explain))
            fwd.append(seconds_of(forward))
    return Paired(fwd, exp)
