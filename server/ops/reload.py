"""Reloading the model repository while it serves: SIGHUP, --poll and the admin RPC.

A reload compares each model folder's files (name, size, mtime, inode) with what was last
loaded, and loads new and changed models one at a time on a background thread while the
current versions keep answering; only a fully built model replaces its predecessor. A new
version that fails to load leaves the old one serving, listed with the reason; a removed
folder stops being served (calls already running finish on the version they started with).

Model files should be replaced by rename (write `model.onnx.tmp`, then `mv` it over
`model.onnx`; or build a whole `.name` folder and rename it): a file copied in place can
be caught half-written. That is not fatal, since the half-written version fails to load and
the old one keeps serving, and the next reload sees the finished file, but it is noisy.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..store.reasons import failure_reason
from ..store.repository import FailedModel, LoadedModel, Repository, SessionFactory, load_model
from ..store.scan import empty_hint, model_folders, skipped_hints
from . import metrics

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int, int], ...]


class ReloadPending(Exception):
    """The caller stopped waiting before the reload finished (it goes on regardless)."""


class Outcome(Enum):
    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"
    FAILED = "failed"  # not serving: it was new, or it had failed before too
    KEPT_PREVIOUS = "kept_previous"  # the new files failed; the previous version serves


@dataclass(frozen=True)
class Change:
    name: str
    outcome: Outcome
    error: str = ""  # why it failed, for FAILED and KEPT_PREVIOUS


def fingerprint(folder: Path) -> Fingerprint:
    """What identifies a model folder's current files: any rewrite or rename changes it.
    Dot files and *.tmp files are left out: they are replacements still being written."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or name.endswith(".tmp"):
                continue  # a replacement being written: its rename is the change
            path = Path(dirpath, name)
            try:
                st = path.stat()  # follows symlinks: a swapped link target is a change
            except OSError:
                continue  # removed while we looked; the next reload sees the result
            found.append((str(path.relative_to(folder)), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(found))


def snapshot(root: Path) -> dict[str, Fingerprint]:
    """Every model folder's fingerprint: take it before loading, so that a change made
    during the load is seen by the next reload."""
    return {folder.name: fingerprint(folder) for folder in model_folders(root)}


class Reloader:
    """Reloads on request, one reload at a time, on its own thread.

    Requests made while a reload runs are served by one more reload after it (which sees
    every change made before they were asked), so a burst of SIGHUPs costs two reloads.
    """

    def __init__(
        self,
        root: Path,
        repository: Repository,
        sessions: SessionFactory,
        loaded: dict[str, Fingerprint],
    ) -> None:
        self.root = root
        self.repository = repository
        self.sessions = sessions
        self._loaded = dict(loaded)  # the fingerprint each served (or failed) entry came from
        self._hints = set(skipped_hints(root))  # Repository.load logged these already
        self._state = threading.Condition()
        self._asked = 0  # requests so far
        self._done = 0  # requests served by a finished reload
        self._last: list[Change] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        report_models(repository)

    def request(self) -> int:
        """Ask for a reload; the ticket to `wait` for. Returns at once."""
        with self._state:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
                self._thread.start()
            self._asked += 1
            self._state.notify_all()
            return self._asked

    def wait(self, ticket: int, timeout: float | None = None) -> list[Change] | None:
        """The changes of the reload that served `ticket`; None if it is still running."""
        with self._state:
            if not self._state.wait_for(lambda: self._done >= ticket, timeout):
                return None
            return list(self._last)

    def close(self) -> None:
        with self._state:
            self._closed = True
            self._state.notify_all()

    def _run(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._closed or self._asked > self._done)
                if self._closed:
                    return
                serving = self._asked
            try:
                changes = self.reload()
            except Exception:  # a bug here must not end reloading for good
                log.exception("reload failed")
                changes = []
            with self._state:
                self._done, self._last = serving, changes
                self._state.notify_all()

    def reload(self) -> list[Change]:
        """One pass over the repository folder, on the calling thread."""
        if not self.root.is_dir():
            log.error("reload: model repository %s is not a folder; nothing changed", self.root)
            return []
        self._log_new_hints()
        folders = {folder.name: folder for folder in model_folders(self.root)}
        changes = [self._remove(name) for name in sorted(set(self._loaded) - set(folders))]
        for name, folder in folders.items():
            now = fingerprint(folder)
            if self._loaded.get(name) != now:
                changes.append(self._load(name, folder))
                self._loaded[name] = now
        for change in changes:
            metrics.observe_model_load(change.outcome.value)
        report_models(self.repository)
        _log_summary(changes)
        return changes

    def _remove(self, name: str) -> Change:
        self.repository.replace(name, None)
        del self._loaded[name]
        metrics.forget_model(name)
        log.info("model %s removed", name)
        return Change(name, Outcome.REMOVED)

    def _load(self, name: str, folder: Path) -> Change:
        old = self._entry(name)
        try:
            new = load_model(folder, self.sessions)
        except Exception as exc:  # DeviceUnavailable too: the old version can still serve
            reason = failure_reason(exc)
            log.debug("model %s failed to load", name, exc_info=True)
            if isinstance(old, LoadedModel):
                log.error(
                    "model %s: the new version failed to load (%s); the previous version "
                    "keeps serving",
                    name,
                    reason,
                )
                self.repository.replace(name, old, reload_error=reason)
                return Change(name, Outcome.KEPT_PREVIOUS, reason)
            log.error("model %s is unavailable: %s", name, reason)
            self.repository.replace(name, FailedModel(name, reason))
            return Change(name, Outcome.FAILED, reason)
        self.repository.replace(name, new)
        log.info("model %s %s: explains %s -> %s", name, _verb(old), new.input, new.output)
        return Change(name, Outcome.ADDED if old is None else Outcome.UPDATED)

    def _entry(self, name: str) -> LoadedModel | FailedModel | None:
        return self.repository.entry(name) if name in self.repository.names() else None

    def _log_new_hints(self) -> None:
        hints = set(skipped_hints(self.root))
        for hint in sorted(hints - self._hints):
            log.warning("%s", hint)
        self._hints = hints
        if not model_folders(self.root) and self._loaded:
            log.warning("%s", empty_hint(self.root))


def report_models(repository: Repository) -> None:
    """The repository's state to the metrics: loaded, failed, serving an older version."""
    entries = [repository.entry(name) for name in repository.names()]
    loaded = sum(isinstance(e, LoadedModel) for e in entries)
    stale = sum(repository.reload_error(name) is not None for name in repository.names())
    metrics.observe_models(loaded, len(entries) - loaded, stale)


def _verb(old: LoadedModel | FailedModel | None) -> str:
    return "loaded" if old is None else "reloaded"


def _log_summary(changes: Iterable[Change]) -> None:
    by_outcome: dict[Outcome, list[str]] = {}
    for change in changes:
        by_outcome.setdefault(change.outcome, []).append(change.name)
    if not by_outcome:
        log.debug("reload: no changes")
        return
    parts = [f"{o.value} {', '.join(names)}" for o, names in by_outcome.items()]
    log.info("reload: %s", "; ".join(parts))
