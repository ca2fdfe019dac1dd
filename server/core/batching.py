"""A bounded queue per model: requests wait instead of being refused, and are merged.

Each model gets one `ModelQueue`. A request waits in it until a runner takes it, its own
deadline passes (DeadlineExceeded) or its caller goes away (Cancelled); only a full queue
refuses (Overloaded). A runner takes the oldest request and, as Triton's dynamic batcher
does, every queued request with the same key (method, parameters, sample shape) that still
fits in `max_rows`, waiting up to `max_delay_s` for more to come while the batch is not
full; it runs them as one batch and hands each caller exactly its own rows. With `adaptive`
(the default), `max_rows` is a ceiling: the queue times its runs and merges only as many
rows as measured cheapest per row (batch_sizer.py), so batching is never kept where it
is slower than none.

A request given up while it runs is resolved at once; when every request of a run has been
given up, the run itself is stopped (`Cancel`, onnxruntime's `RunOptions.terminate`), so the CPU is
free for the requests still waiting.

Runners are threads started when requests arrive and ended after `idle_exit_s` without
work, so a model that nobody asks for (or an old version swapped out by a reload) holds none.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from ..ops import hooks
from ..runtime.engines import Cancel
from .batch_sizer import BatchSizer
from .errors import Cancelled, DeadlineExceeded, Overloaded

# Runs one batch: key, input rows, targets (one per row), and the options that can stop it.
# Returns arrays whose first dimension is the batch's rows.
RunBatch = Callable[[Hashable, np.ndarray, np.ndarray, Cancel], Sequence[np.ndarray]]
# Registers a function to call when the caller goes away; False when it already has.
OnAbandon = Callable[[Callable[[], None]], bool]


_FOREVER_S = 30 * 24 * 3600.0


@dataclass(frozen=True)
class QueueLimits:
    """How much each model's queue holds and how it batches (the serve flags' defaults)."""

    max_queue: int = 64  # requests waiting per model; one more is refused
    instances: int = 1  # runs of one model at once
    max_rows: int = 16  # rows merged into one run (a single larger request runs alone)
    max_delay_s: float = 0.0  # how long the oldest request waits for others to merge
    idle_exit_s: float = 5.0  # a runner thread with nothing to do for this long ends
    adaptive: bool = True  # merge only up to the measured cheapest rows per run


class _Job:
    def __init__(self, key: Hashable, x: np.ndarray, targets: np.ndarray, deadline: float | None):
        self.key = key
        self.x = x
        self.targets = targets
        self.rows = int(x.shape[0])
        self.deadline = deadline
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.outputs: list[np.ndarray] = []
        self.error: BaseException | None = None
        self.abandoned = False
        self.batch: _Batch | None = None


@dataclass
class _Batch:
    jobs: list[_Job]
    cancel: Cancel  # set when every job of the batch was given up


class ModelQueue:
    def __init__(
        self, name: str, run: RunBatch, limits: QueueLimits, batchable: bool = True
    ) -> None:
        self.name = name
        self.limits = limits
        self.batchable = batchable  # False: a model of fixed batch size; one request a run
        self._run = run
        self.sizer = BatchSizer(limits.max_rows) if limits.adaptive and batchable else None
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._runners = 0
        self._idle = 0

    def submit(
        self,
        key: Hashable,
        x: np.ndarray,
        targets: np.ndarray,
        deadline: float | None = None,
        on_abandon: OnAbandon | None = None,
    ) -> list[np.ndarray]:
        """The outputs of running `x` (one array per output, rows of x only); blocks.

        `deadline` is a `time.monotonic()` time by which the run must have started.
        """
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        job = _Job(key, x, targets, deadline)
        with self._cond:
            if len(self._queue) >= self.limits.max_queue:
                raise Overloaded(
                    f"model {self.name!r} has {len(self._queue)} requests waiting, its queue's "
                    "maximum; retry later"
                )
            self._queue.append(job)
            hooks.queue_depth(self.name, len(self._queue))
            if self._runners < self.limits.instances and self._idle == 0:
                self._runners += 1
                threading.Thread(target=self._runner, name=f"run-{self.name}", daemon=True).start()
            self._cond.notify_all()
        gone = Cancelled("the call was cancelled")
        if on_abandon is not None and not on_abandon(lambda: self._abandon(job, gone)):
            self._abandon(job, gone)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout is not None and timeout > _FOREVER_S:
            timeout = None  # some clients send "no deadline" as centuries, past time_t
        if not job.done.wait(timeout):
            self._abandon(job, DeadlineExceeded(_late(job)))
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.outputs

    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- giving up -----------------------------------------------------------------------
    def _abandon(self, job: _Job, error: BaseException) -> None:
        with self._cond:
            if job.done.is_set():
                return
            job.abandoned = True
            if job.batch is None:
                self._queue.remove(job)
                hooks.queue_depth(self.name, len(self._queue))
            elif all(j.abandoned for j in job.batch.jobs):
                # Nobody waits for this run any more: stop it between two nodes.
                job.batch.cancel.set()
            job.error = error
            job.done.set()

    # -- running -------------------------------------------------------------------------
    def _runner(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                if batch is None:
                    self._runners -= 1
                    return
            self._execute(batch)

    def _take(self) -> _Batch | None:
        """The next batch, removed from the queue; None after idling too long. Holds _cond."""
        ready = time.monotonic()
        while True:
            if not self._queue:
                self._idle += 1
                woke = self._cond.wait_for(lambda: bool(self._queue), self.limits.idle_exit_s)
                self._idle -= 1
                if not woke:
                    return None
                ready = time.monotonic()
            head = self._queue[0]
            limit = self._limit(head.key)
            if self.batchable and self.limits.max_delay_s > 0:
                # Counted from when this runner is free, not from the head's arrival: clients
                # that resend as soon as they are answered come back a little after a run
                # ends, when the head has waited the whole run already; waiting a moment
                # then lets them join it, instead of splitting them into two runs forever.
                flush_at = max(head.enqueued, ready) + self.limits.max_delay_s
                while (
                    self._queue
                    and self._queue[0] is head
                    and self._mergeable_rows(head) < limit
                    and time.monotonic() < flush_at
                ):
                    self._cond.wait(flush_at - time.monotonic())
                if not self._queue or self._queue[0] is not head:
                    continue  # the head was given up, or another runner took it
            jobs = self._merge(head, limit)
            for job in jobs:
                self._queue.remove(job)
            hooks.queue_depth(self.name, len(self._queue))
            batch = _Batch(jobs, Cancel())
            for job in jobs:
                job.batch = batch
            return batch

    def _compatible(self, head: _Job) -> list[_Job]:
        if not self.batchable:
            return [head]
        return [job for job in self._queue if job.key == head.key]

    def _mergeable_rows(self, head: _Job) -> int:
        return sum(job.rows for job in self._compatible(head))

    def _limit(self, key: Hashable) -> int:
        return self.limits.max_rows if self.sizer is None else self.sizer.limit(key)

    def _merge(self, head: _Job, limit: int) -> list[_Job]:
        jobs, rows = [head], head.rows
        for job in self._compatible(head)[1:]:
            if rows + job.rows <= limit:
                jobs.append(job)
                rows += job.rows
        return jobs

    def _execute(self, batch: _Batch) -> None:
        jobs = batch.jobs
        x = jobs[0].x if len(jobs) == 1 else np.concatenate([j.x for j in jobs])
        targets = jobs[0].targets if len(jobs) == 1 else np.concatenate([j.targets for j in jobs])
        hooks.batch_size(self.name, jobs[0].key, int(x.shape[0]))
        try:
            started = time.perf_counter()
            outputs = self._run(jobs[0].key, x, targets, batch.cancel)
            if self.sizer is not None and not batch.cancel.is_set:
                self.sizer.record(jobs[0].key, int(x.shape[0]), time.perf_counter() - started)
        except Exception as exc:
            with self._cond:
                for job in jobs:
                    if not job.done.is_set():
                        job.error = exc
                        job.done.set()
            return
        with self._cond:
            start = 0
            for job in jobs:
                if not job.done.is_set():
                    job.outputs = [np.asarray(o[start : start + job.rows]) for o in outputs]
                    job.done.set()
                start += job.rows


def _late(job: _Job) -> str:
    if job.batch is None:
        return "the request's deadline passed while it waited in the queue"
    return "the request's deadline passed while it ran"
