"""The test run's memory budget: measured for every run, enforced under CI.

What is measured:
- the pytest process's peak resident set (VmHWM, which the kernel keeps);
- the largest peak of any process the tests start (servers, nginx, node, chromium, a
  pytest of pytester's...): a watcher thread reads each descendant's VmHWM from /proc
  every SAMPLE_SECONDS. (RUSAGE_CHILDREN cannot serve: the kernel folds the parent's
  size into a fork- or vfork-then-exec child's figure, so it reports pytest's own peak.)

The peaks are printed at the end of every run, with the test modules that raised
pytest's peak most. Under CI (tests/helpers/tools.py), or with ONNXPLAIN_MEMORY_BUDGET_GIB set,
a run whose pytest process or largest child went over the budget (that variable, default
BUDGET_GIB) fails, even when every test passed.

ONNXPLAIN_MEMORY_LOG=FILE also writes one tab-separated line per test: the test, pytest's
peak and current RSS after its teardown, and the largest child's peak so far (bytes).

After each test glibc is asked to hand freed heap back to the system (malloc_trim), and
after each test module what it left is collected first, so that one test's garbage does
not sit under the next one's peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import sys
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.tools import in_ci

# Issue 21 asks for 6 GB. Measured in full runs: 14.1 GiB at first, 6.2-6.6 GiB once large
# models reached the runtimes as files, 5.71 GiB with the heavy resources in `with` blocks,
# and below that once the finite-difference test held one VGG-19 session at a time;
# tests/README.md (Budget) has the figures.
BUDGET_GIB = 6.0
SAMPLE_SECONDS = 0.2
GIB = 1024**3
TOP_MODULES = 6
PAGE = os.sysconf("SC_PAGE_SIZE")


def budget_bytes() -> int | None:
    """The enforced budget in bytes, or None where it is only reported (outside CI)."""
    chosen = os.environ.get("ONNXPLAIN_MEMORY_BUDGET_GIB", "").strip()
    if chosen:
        return int(float(chosen) * GIB)
    return int(BUDGET_GIB * GIB) if in_ci() else None


def peak_self() -> int:
    """This process's peak resident set so far, in bytes: VmHWM, not getrusage's ru_maxrss,
    which also takes in the parent's peak when the parent started it by vfork (as
    subprocess does): a pytest started by pytester from a 2 GiB pytest said 2 GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: a guess


def rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _trim_heap(collect: bool = True) -> None:
    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to ask
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def _hwm_and_command(pid: int) -> tuple[int, str] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024, command.decode(errors="replace")
    return None  # a zombie or a kernel thread: no memory of its own


@dataclass
class ChildWatch:
    """The largest VmHWM seen among this process's descendants, sampled by a thread."""

    peak: int = 0
    command: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _own_command: str = ""

    def start(self) -> None:
        own = _hwm_and_command(os.getpid())
        self._own_command = own[1] if own else ""
        threading.Thread(target=self._run, name="memory-budget-children", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.sample()

    def sample(self) -> None:
        pending = _children(os.getpid())
        while pending:
            pid = pending.pop()
            pending += _children(pid)
            seen = _hwm_and_command(pid)
            # Between vfork and exec a child still shares pytest's memory and command line.
            if seen is None or seen[1] == self._own_command:
                continue
            if seen[0] > self.peak:
                self.peak, self.command = seen

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


class MemoryBudget:
    """The plugin: per-module peaks, the end-of-run report and the CI check."""

    def __init__(self) -> None:
        self.children = ChildWatch()
        # Taken out of the environment: a pytest the tests start must not write to it too.
        self.log_path = os.environ.pop("ONNXPLAIN_MEMORY_LOG", "").strip() or None
        self.module_growth: dict[str, int] = {}
        self._module_start_peak = 0
        self.over: list[str] = []

    @pytest.hookimpl
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._module_start_peak = peak_self()
        self.children.start()
        if self.log_path:
            Path(self.log_path).write_text("test\tpeak_self\trss_now\tpeak_child\n")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, None, None]:
        yield
        last_of_module = nextitem is None or nextitem.path != item.path
        if last_of_module:
            self.children.sample()
            peak = peak_self()
            grown = peak - self._module_start_peak
            if grown > 0:
                self.module_growth[str(item.path.name)] = grown
            _trim_heap()  # the module's fixtures are torn down by now
            self._module_start_peak = peak_self()
        else:
            _trim_heap(collect=False)  # cheap; a full collection per test is not
        if self.log_path:
            with open(self.log_path, "a") as log:
                log.write(f"{item.nodeid}\t{peak_self()}\t{rss_now()}\t{self.children.peak}\n")

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.children.stop()
        limit = budget_bytes()
        if limit is None:
            return
        if peak_self() > limit:
            self.over.append(f"the pytest process peaked at {_gib(peak_self())}")
        if self.children.peak > limit:
            self.over.append(
                f"a child peaked at {_gib(self.children.peak)}: {self.children.command[:200]}"
            )
        if self.over and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        limit = budget_bytes()
        budget = f"budget {_gib(limit)}" if limit is not None else "no budget enforced outside CI"
        child = _gib(self.children.peak)
        if self.children.command:
            child += f" ({self.children.command[:80]})"
        terminalreporter.write_sep(
            "=", f"memory: pytest peak RSS {_gib(peak_self())}, largest child {child}; {budget}"
        )
        top = sorted(self.module_growth.items(), key=lambda kv: -kv[1])[:TOP_MODULES]
        if top:
            terminalreporter.write_line(
                "raised pytest's peak most: " + ", ".join(f"{m} +{_gib(g)}" for m, g in top)
            )
        for reason in self.over:
            terminalreporter.write_line(
                f"MEMORY BUDGET EXCEEDED: {reason} (budget {_gib(limit or 0)}; "
                "tests/helpers/memory_budget.py)",
                red=True,
                bold=True,
            )


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform.startswith("linux"):
        config.pluginmanager.register(MemoryBudget(), "onnxplain-memory-budget")
