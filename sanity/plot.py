"""The sanity check as a figure: similarity curves per metric, and one input's maps per step.

The layout follows Adebayo et al. 2018's Figures 2 and 4: the x axis walks the cascade from
the original model to the fully randomised one; below, one input's absolute maps for each
method at each step, so a reader sees what a similarity of 0.9 or 0.1 looks like.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server

import matplotlib.pyplot as plt
import numpy as np

from .report import SanityReport
from .similarity import METRICS, absolute_map

_TITLES = {
    "spearman_abs": "Spearman rank corr. (absolute)",
    "spearman": "Spearman rank corr. (signed)",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}


def plot_report(
    report: SanityReport,
    path: Path,
    maps: dict[str, list[np.ndarray]] | None = None,
    layout: str = "NCHW",
) -> None:
    """Write the figure to `path` (PNG or SVG by its suffix).

    `maps[method][depth]` is one input's saliency at each cascade step (0: the original).
    """
    steps = ["original"] + [s.layer for s in report.methods[0].steps]
    rows = len(report.methods) if maps else 0
    fig = plt.figure(figsize=(max(10.0, 1.1 * len(steps)), 3.4 + 1.1 * rows), layout="constrained")
    halves = fig.subfigures(2, 1, height_ratios=[3.4, 0.01 + 1.1 * rows])
    top, bottom = cast("np.ndarray", halves)  # two rows: an array of SubFigures
    for k, (metric, ax) in enumerate(zip(METRICS, top.subplots(1, len(METRICS)))):
        for result in report.methods:
            values = [1.0] + [s.similarity[metric] for s in result.steps]
            ax.plot(range(len(steps)), values, marker="o", markersize=3, label=result.method)
        if metric == report.metric:
            ax.axhline(report.max_similarity, color="gray", linestyle="--", linewidth=1)
        ax.set_title(_TITLES[metric], fontsize=9)
        ax.set_ylim(-0.25, 1.05)
        ax.set_xticks(range(len(steps)), steps, rotation=90, fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    if maps:
        axes = bottom.subplots(rows, len(steps), squeeze=False)
        for row, result in enumerate(report.methods):
            for depth, ax in enumerate(axes[row]):
                image = absolute_map(maps[result.method][depth], layout)
                ax.imshow(image, cmap="gray", vmin=0, vmax=float(np.percentile(image, 99)) or 1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if depth == 0:
                    ax.set_ylabel(result.method, fontsize=8)
                if row == 0:
                    ax.set_title(steps[depth], fontsize=6)
    verdicts = ", ".join(f"{m.method} {'pass' if m.passed else 'FAIL'}" for m in report.methods)
    fig.suptitle(
        f"{report.model or 'The model'}: weights randomised layer by layer from the logits "
        f"down ({report.inputs} inputs)\nverdict on the {report.score} {report.metric} ≤ "
        f"{report.max_similarity:g}: {verdicts}",
        fontsize=10,
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)
