"""The log of refused requests: one line each, but at most `per_kind` lines of one kind and
`burst` lines in all per window.

A refused request is the client's fault, so it is worth one line (method, status, peer,
reason) and never a traceback. One line each is still a flood when someone sends bad
bodies as fast as the socket allows (2,000 in 4 s measured here, 178 bytes a line), or the
same decompression bomb in a loop: past `per_kind` lines of one kind (say, Explain refused
INVALID_ARGUMENT for its image) or `burst` lines in all in a window, the rest are counted,
and each kind's count is logged in one line when the window ends or the server stops. An
operator so sees every kind of refusal, however many of another kind flood in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable


class RefusalLog:
    def __init__(
        self,
        log: logging.Logger,
        burst: int = 50,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        per_kind: int | None = 5,
    ) -> None:
        self.log = log
        self.burst = burst
        self.window_s = window_s
        self.per_kind = per_kind  # None: only `burst` applies
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._logged = 0
        self._logged_of: Counter[Hashable] = Counter()
        self._suppressed: Counter[Hashable] = Counter()

    def refused(self, message: str, *args: object, kind: Hashable = None) -> None:
        """Log one refusal (printf-style `message`), unless its window is full.

        `kind` groups refusals that say the same thing (e.g. the RPC, status and error
        class); its str() names them in the count line. None: only `burst` applies.
        """
        with self._lock:
            if self._clock() - self._start >= self.window_s:
                self._flush_locked()
            limited = kind is not None and self.per_kind is not None
            full = limited and self._logged_of[kind] >= (self.per_kind or 0)
            if full or self._logged >= self.burst:
                self._suppressed[kind] += 1
                return
            self._logged += 1
            self._logged_of[kind] += 1
        self.log.info(message, *args)

    def flush(self) -> None:
        """Log the count of refusals not logged so far, if any: one line per kind."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        for kind, count in self._suppressed.items():
            limits = f"over {self.burst} lines in {self.window_s:.0f} s"
            if kind is not None and self.per_kind is not None:
                limits = (
                    f"{kind}: over {self.per_kind} lines of the kind or {self.burst} in all "
                    f"in {self.window_s:.0f} s"
                )
            self.log.info("%d more refused requests not logged (%s)", count, limits)
        self._start, self._logged = self._clock(), 0
        self._logged_of.clear()
        self._suppressed.clear()
