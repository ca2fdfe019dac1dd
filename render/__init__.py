"""Heatmaps of saliency maps, shared by the client, the CLI, the service and the figure script.

Needs numpy, Pillow and matplotlib only (the `render` extra; `serve` includes it).

    from onnxplain.render import HeatmapOptions, render_heatmap, to_2d
    image = render_heatmap(to_2d(saliency[0]), HeatmapOptions(sign="all", opacity=0.5), photo)

    from onnxplain.render import comparison_figure, figure_png
    png = figure_png(comparison_figure(photo, [("method A", to_2d(s_a[0])), ...]))
"""

import importlib
from typing import TYPE_CHECKING, Any

from .files import row_paths
from .options import DEFAULT_COLORMAPS, DEFAULT_OPTIONS, SIGNS, HeatmapOptions, Sign
from .overlay import (
    MAX_SIDE,
    as_image,
    enlarge,
    fit_size,
    png_bytes,
    render_heatmap,
    tensor_image,
)
from .scale import ScaledMap, colour_range, guess_layout, scale_map, to_2d

if TYPE_CHECKING:
    from .figures import Panel, comparison_figure, figure, figure_png

# Figures need matplotlib's axes machinery (a second or more to import); the service draws
# heatmaps without it, so the figure names load on first use.
_FIGURE_NAMES = ("Panel", "comparison_figure", "figure", "figure_png")


def __getattr__(name: str) -> Any:
    if name in _FIGURE_NAMES:
        return getattr(importlib.import_module(".figures", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_COLORMAPS",
    "DEFAULT_OPTIONS",
    "MAX_SIDE",
    "SIGNS",
    "HeatmapOptions",
    "Panel",
    "ScaledMap",
    "Sign",
    "as_image",
    "colour_range",
    "comparison_figure",
    "enlarge",
    "figure",
    "figure_png",
    "fit_size",
    "guess_layout",
    "png_bytes",
    "render_heatmap",
    "row_paths",
    "scale_map",
    "tensor_image",
    "to_2d",
]
