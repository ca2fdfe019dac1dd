"""The sanity check's result: per method, each cascade step's similarities and a verdict.

Stored as JSON beside the model (`sanity.json`), where the server reads it for ModelInfo.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "sanity.json"
# The similarity measures, in the order tables show them (computed in similarity.py).
METRICS = ("spearman_abs", "spearman", "ssim", "hog")
# How a method's steps become one number per measure: their mean over the cascade, or the
# value once every layer is random.
SCORES = ("mean", "last")


@dataclass(frozen=True)
class Step:
    layer: str  # the layer randomised at this step (all layers above it are random too)
    depth: int  # how many layers are randomised
    similarity: dict[str, float]  # metric -> mean over the inputs, 1 = unchanged map


@dataclass(frozen=True)
class MethodResult:
    method: str
    steps: list[Step]
    passed: bool  # the map changed enough as the layers were randomised


@dataclass(frozen=True)
class SanityReport:
    model: str
    metric: str  # the metric the verdict uses
    max_similarity: float  # a method fails when its `score` of `metric` is above this
    score: str  # "mean" or "last" (SCORES)
    inputs: int
    targets: list[int]
    methods: list[MethodResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.methods)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    def write(self, folder: Path) -> Path:
        # Written aside, then renamed: a server reloading the folder never reads half a
        # report (its reload skips *.tmp files and sees the rename as the change).
        path = folder / REPORT_FILE
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(self.to_json())
        partial.replace(path)
        return path


def summarise(steps: list[Step], score: str) -> dict[str, float]:
    """One number per measure for a method's steps: see SCORES."""
    if not steps:
        return dict.fromkeys(METRICS, 1.0)
    if score == "last":
        return dict(steps[-1].similarity)
    return {k: sum(s.similarity[k] for s in steps) / len(steps) for k in METRICS}


def from_json(text: str) -> SanityReport:
    raw: dict[str, Any] = json.loads(text)
    methods = [
        MethodResult(
            m["method"],
            [Step(s["layer"], int(s["depth"]), dict(s["similarity"])) for s in m["steps"]],
            bool(m["passed"]),
        )
        for m in raw["methods"]
    ]
    return SanityReport(
        raw["model"],
        raw["metric"],
        float(raw["max_similarity"]),
        str(raw["score"]),
        int(raw["inputs"]),
        [int(t) for t in raw["targets"]],
        methods,
    )


def read_report(folder: Path) -> SanityReport | None:
    """The report stored in a model folder, or None when there is none."""
    path = folder / REPORT_FILE
    return from_json(path.read_text()) if path.exists() else None


def table(report: SanityReport) -> str:
    """A Markdown table: each method's score of every measure, and its verdict."""
    lines = [
        f"Similarity to the original maps ({report.score} over the cascade of "
        f"{len(report.methods[0].steps) if report.methods else 0} layers, "
        f"{report.inputs} inputs; 1 = unchanged):",
        "",
        "| method | " + " | ".join(METRICS) + " | verdict |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    for m in report.methods:
        scores = summarise(m.steps, report.score)
        cells = " | ".join(f"{scores[k]:.2f}" for k in METRICS)
        verdict = "pass" if m.passed else f"FAIL ({report.metric} > {report.max_similarity:g})"
        lines.append(f"| {m.method} | {cells} | {verdict} |")
    return "\n".join(lines)
