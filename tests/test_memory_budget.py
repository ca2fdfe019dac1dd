"""The memory budget check (tests/helpers/memory_budget.py) can fail, for the right reason.

Each case runs a throwaway test file in a pytest of its own, with this suite's conftest,
a budget chosen to be under or over what that pytest (or a child it starts) really uses,
and CI set or not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers.memory_budget import BUDGET_GIB

HERE = Path(__file__).resolve().parent

PASSING = """
def test_passes():
    assert True
"""

# A child process that really touches 400 MiB (bytes * n writes every page) and lives long
# enough for the watcher's samples; pytest itself stays near 100 MiB.
BIG_CHILD = """
import subprocess, sys

def test_starts_a_big_child():
    code = "import time; block = b'1' * (400 << 20); time.sleep(1.5)"
    subprocess.run([sys.executable, "-c", code], check=True)
"""


def _run(
    pytester: pytest.Pytester, budget_gib: str | None, ci: str | None, source: str = PASSING
) -> pytest.RunResult:
    pytester.makeconftest((HERE / "conftest.py").read_text())
    (pytester.path / "helpers").mkdir()
    (pytester.path / "helpers" / "__init__.py").write_text("")
    for helper in ("tools.py", "memory_budget.py"):  # what the conftest imports
        shutil.copy(HERE / "helpers" / helper, pytester.path / "helpers" / helper)
    pytester.makepyfile(test_throwaway=source)
    for name, value in (("ONNXPLAIN_MEMORY_BUDGET_GIB", budget_gib), ("CI", ci)):
        if value is None:
            pytester._monkeypatch.delenv(name, raising=False)
        else:
            pytester._monkeypatch.setenv(name, value)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_throwaway.py")


def test_a_run_over_budget_fails_under_ci(pytester: pytest.Pytester) -> None:
    result = _run(pytester, budget_gib="0.001", ci="1")  # 1 MiB: no Python fits
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*MEMORY BUDGET EXCEEDED: the pytest process peaked at *GiB*"])


def test_a_run_within_budget_passes_and_says_its_peak(pytester: pytest.Pytester) -> None:
    result = _run(pytester, budget_gib="64", ci="1")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*memory: pytest peak RSS *GiB, largest child *; budget 64.00 GiB*"]
    )
    result.stdout.no_fnmatch_line("*MEMORY BUDGET EXCEEDED*")


def test_the_default_budget_holds_under_ci(pytester: pytest.Pytester) -> None:
    result = _run(pytester, budget_gib=None, ci="1")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*memory: pytest peak RSS *; budget {BUDGET_GIB:.2f} GiB*"])


def test_outside_ci_the_peak_is_reported_not_enforced(pytester: pytest.Pytester) -> None:
    result = _run(pytester, budget_gib=None, ci=None)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*memory: pytest peak RSS *; no budget enforced outside CI*"])


def test_a_child_over_budget_fails_the_run(pytester: pytest.Pytester) -> None:
    # 0.3 GiB: above the inner pytest's own peak, below the child's 400 MiB.
    result = _run(pytester, budget_gib="0.3", ci="1", source=BIG_CHILD)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*MEMORY BUDGET EXCEEDED: a child peaked at 0.*GiB*time.sleep*"])
    result.stdout.no_fnmatch_line("*the pytest process peaked*")


def test_the_log_has_a_line_per_test(pytester: pytest.Pytester) -> None:
    log = pytester.path / "memory.tsv"
    pytester._monkeypatch.setenv("ONNXPLAIN_MEMORY_LOG", str(log))
    _run(pytester, budget_gib=None, ci=None, source=PASSING + PASSING.replace("passes", "too"))
    header, *rows = log.read_text().splitlines()
    assert header.split("\t") == ["test", "peak_self", "rss_now", "peak_child"]
    assert [r.split("\t")[0] for r in rows] == [
        "test_throwaway.py::test_passes",
        "test_throwaway.py::test_too",
    ]
    for row in rows:  # a small pytest's figures, in bytes (the two are read a moment apart)
        peak, now = (int(v) for v in row.split("\t")[1:3])
        assert 10 << 20 < now < 1 << 30 and peak >= 0.9 * now, row


def test_a_big_parent_does_not_count_as_the_pytest_it_starts(pytester: pytest.Pytester) -> None:
    # The kernel folds a vfork parent's peak into its exec'd child's ru_maxrss: with this
    # process over 0.5 GiB, a pytest it starts must still say its own (~0.05 GiB) peak.
    ballast = b"1" * (512 << 20)
    result = _run(pytester, budget_gib="0.3", ci="1")
    del ballast
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.no_fnmatch_line("*MEMORY BUDGET EXCEEDED*")
