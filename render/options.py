"""How a saliency map is drawn: sign, colormap, opacity, clipping, overlay. Validated once here.

The vocabulary is Captum's `visualize_image_attr` (sign all/positive/negative/absolute,
an opacity for the blended map, an outlier clip) and pytorch-grad-cam's `show_cam_on_image`
(a colormap blended over the image with one weight), so users meet names they know.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, get_args

import matplotlib
from matplotlib.colors import Colormap

Sign = Literal["all", "positive", "negative", "absolute"]
SIGNS: tuple[Sign, ...] = get_args(Sign)

# `all` needs a diverging map whose middle (zero) is neutral; the one-sided signs use
# sequential maps that start near white, so that zero saliency leaves the image as it is
# under the blend. Red is positive and blue negative in every one of them.
DEFAULT_COLORMAPS: dict[Sign, str] = {
    "all": "RdBu_r",
    "positive": "Reds",
    "negative": "Blues",
    "absolute": "viridis",
}


@dataclass(frozen=True)
class HeatmapOptions:
    """`sign`: which part of the map to draw. `opacity`: the map's weight over the image
    (0: only the image, 1: only the map). `colormap`: any matplotlib colormap name (None: the
    sign's default). `percentile`: values beyond this percentile of |map| saturate the colour
    scale (None or 100: the maximum). `overlay`: blend over the image when there is one."""

    sign: Sign = "all"
    opacity: float = 0.5
    colormap: str | None = None
    percentile: float | None = None
    overlay: bool = True

    def __post_init__(self) -> None:
        if self.sign not in SIGNS:
            raise ValueError(f"unknown sign {self.sign!r}; use one of {', '.join(SIGNS)}")
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"opacity {self.opacity} is outside [0, 1]")
        if self.percentile is not None and not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile {self.percentile} is outside (0, 100]")
        if self.colormap is not None and self.colormap not in matplotlib.colormaps:
            raise ValueError(
                f"unknown colormap {self.colormap!r}; use a matplotlib colormap name "
                "such as RdBu_r, bwr, coolwarm, viridis, inferno, jet, Reds"
            )

    @property
    def cmap(self) -> Colormap:
        return colormap(self.colormap or DEFAULT_COLORMAPS[self.sign])


@functools.cache
def colormap(name: str) -> Colormap:
    """matplotlib's colormap, built once: the registry hands out a fresh copy per lookup,
    whose table then costs 3 ms to build, more than drawing a 224x224 map. Shared between
    threads read-only, its table built here before anyone reads it."""
    cmap = matplotlib.colormaps[name]
    cmap(0.0)  # builds the lookup table now
    return cmap


DEFAULT_OPTIONS = HeatmapOptions()
