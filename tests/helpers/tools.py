"""The one rule for tools the tests need: skip on a developer's machine, FAIL under CI.

A skip in CI would let a broken install pass as green. Every test that needs something
outside the Python standard library and the test extra's core (a binary on PATH, an optional
runtime, a Node.js package) asks through these helpers; tests/conftest.py also turns a
`pytest.importorskip` skip into a failure under CI, for the same reason.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """CI is on when the CI variable is set to anything but empty, 0 or false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> NoReturn:
    """`what` (a sentence saying what is missing and how to install it) is not there."""
    if in_ci():
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(what)


def require(tool: str, ready: bool, how: str) -> None:
    if not ready:
        missing(f"{tool} is not available: {how}")


def require_on_path(tool: str, how: str) -> str:
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} is not on PATH: {how}")
    return path


def require_module(name: str, how: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"cannot import {name} ({exc}): {how}")
