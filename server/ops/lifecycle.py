"""The main thread's life after start-up: wait for signals and poll ticks, then drain.

SIGTERM and SIGINT drain (a second one stops at once); SIGHUP reloads the repository.

Why a wakeup fd: the kernel delivers a process-directed signal to any thread that does not
block it (under load, often one of gRPC's or onnxruntime's). CPython's C-level handler runs
there and only marks the signal pending; the Python handler runs later, on the main thread,
when that thread next executes bytecode. A main thread parked in an untimed lock wait
(`threading.Event().wait()`) never does, so the signal was lost until a second one came.
With `signal.set_wakeup_fd`, the C-level handler also writes the signal's number to a
socket, whatever thread it runs on, and the main thread sleeps in select() on that socket.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
import time
from types import FrameType, TracebackType

from ..protocols.grpc.app import Service
from .reload import Reloader

log = logging.getLogger(__name__)

_STOP = (signal.SIGTERM, signal.SIGINT)
_WATCHED = (*_STOP, signal.SIGHUP)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do; the wakeup fd carries the signal."""


class Signals:
    """Catches SIGTERM, SIGINT and SIGHUP from creation on; `wait` returns those received.

    Create it before slow start-up work, so that a signal sent meanwhile is kept (and acted
    on once serving starts) instead of killing the process half-built.
    """

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _ignore) for sig in _WATCHED}

    def wait(self, timeout: float | None) -> list[int]:
        """The signals received, in order; empty when `timeout` seconds passed first."""
        ready, _, _ = select.select([self._read], [], [], timeout)
        if not ready:
            return []
        try:
            return list(self._read.recv(256))
        except BlockingIOError:
            return []

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._read.close()
        self._write.close()

    def __enter__(self) -> Signals:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_until_signal(
    service: Service,
    signals: Signals,
    drain_delay_s: float,
    grace_s: float,
    reloader: Reloader | None = None,
    poll_s: float | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, reloading on SIGHUP and every `poll_s` seconds;
    then drain (a second SIGTERM or SIGINT cuts the drain short) and return."""
    next_poll = time.monotonic() + poll_s if poll_s else None
    while True:
        timeout = None if next_poll is None else max(0.0, next_poll - time.monotonic())
        received = signals.wait(timeout)
        stop = next((sig for sig in received if sig in _STOP), None)
        if stop is not None:
            log.info("%s received", signal.Signals(stop).name)
            break
        if signal.SIGHUP in received:
            if reloader is None:
                log.warning("SIGHUP: this server has no reloader; nothing to reload")
            else:
                log.info("SIGHUP: reloading the model repository")
                reloader.request()
        if next_poll is not None and time.monotonic() >= next_poll:
            if reloader is not None:
                reloader.request()
            next_poll = time.monotonic() + (poll_s or 0)
    if reloader is not None:
        reloader.close()
    _drain(service, signals, drain_delay_s, grace_s)


def _drain(service: Service, signals: Signals, drain_delay_s: float, grace_s: float) -> None:
    log.info("draining: health NOT_SERVING, finishing in-flight requests")
    drainer = threading.Thread(
        target=service.drain, args=(drain_delay_s, grace_s), name="drain", daemon=True
    )
    drainer.start()
    while drainer.is_alive():
        if any(sig in _STOP for sig in signals.wait(0.2)):
            log.warning("second stop signal: cancelling in-flight requests and stopping now")
            service.stop_now()
            break
    drainer.join()
    log.info("stopped")
