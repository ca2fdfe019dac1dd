"""Figures: panels of overlays, each map with a colour bar in saliency units.

Built on matplotlib's object API (Figure + the Agg canvas), never pyplot, so that a server
thread or a script can draw without a display or pyplot's global state.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from .options import DEFAULT_OPTIONS, HeatmapOptions
from .overlay import as_image, render_heatmap
from .scale import colour_range, scale_map

PANEL_INCHES = 3.0
# Pixels per inch: at least 100; more when a panel's image is larger, so that a panel shows
# the user's image at its own resolution (up to 300 dpi: 900 pixels a panel).
DPI = 100
MAX_DPI = 300


@dataclass(frozen=True)
class Panel:
    """One cell of a figure: a title, and an image, a map ([H, W], see `to_2d`) or both."""

    title: str
    map2d: np.ndarray | None = None
    image: Image.Image | np.ndarray | None = None


def figure(
    rows: Sequence[Sequence[Panel]],
    options: HeatmapOptions = DEFAULT_OPTIONS,
    title: str | None = None,
) -> Figure:
    """A grid of panels; every panel with a map gets its own colour bar, since each map is
    scaled to its own range (methods differ by orders of magnitude)."""
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("a figure needs at least one panel")
    sides = [max(as_image(p.image).size) for r in rows for p in r if p.image is not None]
    dpi = min(MAX_DPI, max([DPI] + [side / PANEL_INCHES for side in sides]))
    fig = Figure(figsize=(PANEL_INCHES * 1.25 * n_cols, PANEL_INCHES * n_rows + 0.4), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(row):
                _draw_panel(fig, ax, row[c], options)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def comparison_figure(
    image: Image.Image | np.ndarray,
    maps: Sequence[tuple[str, np.ndarray]],
    options: HeatmapOptions = DEFAULT_OPTIONS,
    title: str | None = None,
) -> Figure:
    """The paper's figure: the input, then each (title, [H, W] map) overlaid on it."""
    panels = [Panel("input", image=image)]
    panels += [Panel(name, map2d=m, image=image) for name, m in maps]
    return figure([panels], options, title)


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi="figure")
    return buffer.getvalue()


def _draw_panel(fig: Figure, ax: Axes, panel: Panel, options: HeatmapOptions) -> None:
    ax.set_title(panel.title, fontsize=9)
    if panel.map2d is None:
        if panel.image is not None:
            ax.imshow(as_image(panel.image).convert("RGB"), interpolation="nearest")
        return
    rendered = render_heatmap(panel.map2d, options, panel.image)
    ax.imshow(rendered, interpolation="nearest")
    low, high = colour_range(scale_map(panel.map2d, options.sign, options.percentile))
    cmap = options.cmap
    if low > high:  # the negative sign: strongest (most negative) at the map's top colour
        low, high, cmap = high, low, cmap.reversed()
    bar = fig.colorbar(ScalarMappable(Normalize(low, high), cmap), ax=ax, fraction=0.046, pad=0.04)
    bar.ax.tick_params(labelsize=7)
    bar.ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
