"""Issue 16: the method registry is the one place a method is described. No hand-written
file of the service, the clients, the renderer, the sanity check or the `onnxplain`
command names a registered method: each reads the registry (a model's default method comes
from its config.toml, or from the registry's DEFAULT_METHOD)."""

from __future__ import annotations

import re
from pathlib import Path

from onnxplain.graph_rewrite.methods import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
SCANNED_TREES = ("server", "client", "render", "sanity")
TEXT_SUFFIXES = {".py", ".js", ".html", ".css", ".toml", ".txt", ".md", ".json"}


def hand_written_files() -> list[Path]:
    files = [
        p
        for tree in SCANNED_TREES
        for p in sorted((ROOT / tree).rglob("*"))
        if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
    ]
    # onnxplain/*.py only: onnxplain/v1/ holds the generated messages, whose enum names
    # the methods by design.
    return files + sorted((ROOT / "onnxplain").glob("*.py"))


def method_pattern() -> re.Pattern[str]:
    names = sorted(REGISTRY, key=len, reverse=True)
    return re.compile(
        r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9_])"
    )


def test_the_pattern_finds_a_method_name_and_only_a_whole_one() -> None:
    pattern = method_pattern()
    name = next(iter(REGISTRY))
    assert pattern.search(f'default = "{name}"  # a word')
    assert not pattern.search(f"{name}_like = 1; my{name} = 2")


def test_no_hand_written_file_outside_the_methods_names_a_method() -> None:
    files = hand_written_files()
    assert len(files) > 30  # the scan reached the trees
    pattern = method_pattern()
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "methods named outside graph_rewrite/methods/:\n" + "\n".join(found)
