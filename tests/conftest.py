import sys
from collections.abc import Generator
from pathlib import Path

import pytest

# The test helpers (fd.py, nets.py, ...) live beside the tests and import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

from helpers.tools import in_ci

# pytester: tests/test_ci_honesty.py runs pytest on throwaway files; memory_budget: the run's
# peak memory, reported at the end and held to a budget under CI (tests/helpers/memory_budget.py).
pytest_plugins = ["pytester", "helpers.memory_budget"]

# What pytest.importorskip says when it skips.
_IMPORTORSKIP = "could not import"


def _fail_if_missing_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and in_ci() and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if _IMPORTORSKIP in reason:
            report.outcome = "failed"
            report.longrepr = f"{reason} (CI is set, so this is a failure, not a skip)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI, a test skipped for a module it could not import fails instead (tools.py)."""
    report = yield
    _fail_if_missing_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """The same for a whole file skipped by a module-level importorskip."""
    report = yield
    _fail_if_missing_in_ci(report)
    return report
