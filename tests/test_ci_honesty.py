"""Under CI a missing tool fails the run; on a developer's machine it skips.

The rule lives in tests/helpers/tools.py and tests/conftest.py; these run it on a throwaway test
file, in a pytest of its own, with CI set and unset.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from helpers.tools import in_ci

HERE = Path(__file__).resolve().parent

NEEDS_TOOLS = """
import pytest
from helpers.tools import require_on_path, require_module

def test_importorskip():
    pytest.importorskip("no_such_module_onnxplain")

def test_binary():
    require_on_path("no-such-binary-onnxplain", "apt-get install nothing")

def test_module():
    require_module("no_such_module_onnxplain", "pip install nothing")

def test_a_skip_for_another_reason_stays_a_skip():
    pytest.skip("not applicable to this case")
"""


WHOLE_FILE = """
import pytest
torch = pytest.importorskip("no_such_module_onnxplain")

def test_never_reached():
    pass
"""


def _run(pytester: pytest.Pytester, ci: str | None, *args: str) -> pytest.RunResult:
    pytester.makeconftest((HERE / "conftest.py").read_text())
    (pytester.path / "helpers").mkdir()
    (pytester.path / "helpers" / "__init__.py").write_text("")
    for helper in ("tools.py", "memory_budget.py"):  # what the conftest imports
        shutil.copy(HERE / "helpers" / helper, pytester.path / "helpers" / helper)
    pytester.makepyfile(test_needs_tools=NEEDS_TOOLS, test_whole_file=WHOLE_FILE)
    if ci is None:
        pytester._monkeypatch.delenv("CI", raising=False)
    else:
        pytester._monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("ci", ["1"])
def test_missing_tools_fail_under_ci(pytester: pytest.Pytester, ci: str) -> None:
    result = _run(pytester, ci, "test_needs_tools.py")
    result.assert_outcomes(failed=3, skipped=1)
    result.stdout.fnmatch_lines(["*CI is set, so this is a failure, not a skip*"])
    # A whole file behind a module-level importorskip is a collection error, which stops CI.
    whole = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_whole_file.py")
    whole.assert_outcomes(errors=1)


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_tools_skip_elsewhere(pytester: pytest.Pytester, ci: str | None) -> None:
    _run(pytester, ci).assert_outcomes(skipped=5)


def test_the_venv_tools_are_on_path() -> None:
    """scripts/test puts its venv's bin first on PATH: tools pip installed there (grpcurl,
    ruff, mypy) are found by name. Checked under CI, where scripts/test is what runs."""
    if not in_ci():
        pytest.skip("checks the PATH that scripts/test sets; CI only")
    bin_dir = Path(sys.executable).parent
    folders = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    assert bin_dir in folders, f"{bin_dir} is not on PATH"
    for tool in ("grpcurl", "ruff", "mypy"):
        assert shutil.which(tool) is not None, f"{tool} is not on PATH"
