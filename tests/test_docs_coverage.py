"""docs/coverage.md's op table lists exactly the ops that have a backward rule.

The rules are registered by `@register(...)` in the family modules of graph_rewrite/rules/
(the registry `RULES`); the table is hand-written, grouped by family, with notes in
parentheses. A rule added or removed without the table following fails here, naming the op.
"""

from __future__ import annotations

import re
from pathlib import Path

from onnxplain.graph_rewrite.rules import NON_DIFFERENTIABLE, RULES

PAGE = Path(__file__).resolve().parents[1] / "docs" / "coverage.md"
HEADER = "| family | ops |"


def table_ops(text: str) -> dict[str, str]:
    """Each op of the table, with its family; an op listed twice fails."""
    lines = text.splitlines()
    start = lines.index(HEADER) + 2  # the header, then the |---| line
    ops: dict[str, str] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        family, cell = (c.strip() for c in line.strip().strip("|").split("|"))
        for op in re.sub(r"\([^)]*\)", "", cell).split(","):
            op = op.strip()
            assert op not in ops, f"{op} is listed under {ops[op]} and {family}"
            ops[op] = family
    return ops


def test_the_op_table_is_the_rule_registry() -> None:
    listed = set(table_ops(PAGE.read_text()))
    unlisted = sorted(set(RULES) - listed)
    stale = sorted(listed - set(RULES))
    assert not unlisted, f"ops with a backward rule missing from docs/coverage.md: {unlisted}"
    assert not stale, f"docs/coverage.md lists ops that have no backward rule: {stale}"


def test_the_ops_said_to_need_no_rule_are_non_differentiable() -> None:
    sentence = re.search(r"Ops that carry no gradient \(([^)]*)\)", PAGE.read_text())
    assert sentence, "docs/coverage.md no longer says which ops carry no gradient"
    named = re.findall(r"\b[A-Z][A-Za-z]+\b", sentence.group(1))
    assert named and set(named) <= NON_DIFFERENTIABLE, sorted(set(named) - NON_DIFFERENTIABLE)


def test_the_table_reader_sees_an_added_and_a_missing_op() -> None:
    text = PAGE.read_text()
    table = table_ops(text)
    assert table["Conv"] == "convolution" and table["Resize"] == "shape"
    # A new rule not in the table, and a row dropped from it, are both caught.
    assert "Acosh" not in table and "Acosh" not in RULES  # an op with no rule yet
    dropped = re.sub(r"(?m)^\| linear \|.*\n", "", text)
    assert {"Gemm", "MatMul"} <= set(RULES) - set(table_ops(dropped))
