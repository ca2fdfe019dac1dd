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


@dataclass(frozen=True)
class Step:
    layer: str  # the layer randomised at this step (all layers above it are random too)
    depth: int  # how many layers are randomised
    similarity: dict[str, float]  # metric -> mean over the inputs, 1 = unchanged map


@dataclass(frozen=True)
class MethodResult:
    method: str
    steps: list[Step]
    passed: bool  # the map changed enough once every layer was randomised

    @property
    def final(self) -> dict[str, float]:
        return self.steps[-1].similarity if self.steps else {}


@dataclass(frozen=True)
class SanityReport:
    model: str
    metric: str  # the metric the verdict uses
    max_similarity: float  # a method fails when its final `metric` is above this
    inputs: int
    targets: list[int]
    methods: list[MethodResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.methods)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    def write(self, folder: Path) -> Path:
        path = folder / REPORT_FILE
        path.write_text(self.to_json())
        return path


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
        int(raw["inputs"]),
        [int(t) for t in raw["targets"]],
        methods,
    )


def read_report(folder: Path) -> SanityReport | None:
    """The report stored in a model folder, or None when there is none."""
    path = folder / REPORT_FILE
    return from_json(path.read_text()) if path.exists() else None


def table(report: SanityReport) -> str:
    """A Markdown table: each method's similarities once every layer is randomised."""
    lines = [
        "| method | " + " | ".join(METRICS) + " | verdict |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    for m in report.methods:
        cells = " | ".join(f"{m.final[k]:.2f}" for k in METRICS)
        verdict = "pass" if m.passed else f"FAIL ({report.metric} > {report.max_similarity:g})"
        lines.append(f"| {m.method} | {cells} | {verdict} |")
    return "\n".join(lines)
