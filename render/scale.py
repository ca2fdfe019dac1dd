"""From one sample's saliency tensor to a 2-D map scaled for a colormap.

Channels are summed, as Captum's `visualize_image_attr` does, so that a signed map keeps
its sign (a max of |·| would turn every map into an absolute one). The sign filter and the
scaling then follow Captum's `_normalize_attr`: the result is in [-1, 1] for `all` and in
[0, 1] for the one-sided signs (a negative map is drawn by its strength, -value / scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import Sign


@dataclass(frozen=True)
class ScaledMap:
    values: np.ndarray  # [H, W] float64, in [-1, 1] (sign all) or [0, 1]
    scale: float  # saliency units at the end of the colour scale (0 for an all-zero map)
    sign: Sign


def to_2d(saliency: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """One sample's saliency, [C, H, W] (NCHW) or [H, W, C] (NHWC) or [H, W], as [H, W].

    A flat feature vector [F] is drawn as one row of pixels rather than refused.
    """
    if saliency.ndim == 1:
        return saliency.astype(np.float64).reshape(1, -1)
    if saliency.ndim == 2:
        return saliency.astype(np.float64)
    if saliency.ndim != 3:
        raise ValueError(
            f"a sample's saliency must be [C, H, W], [H, W, C], [H, W] or [F]; got {saliency.shape}"
        )
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, not {layout!r}")
    return saliency.astype(np.float64).sum(axis=0 if layout == "NCHW" else 2)


def guess_layout(shape: tuple[int, ...]) -> str:
    """A batch's layout when nobody said: NHWC when the last axis looks like channels
    (1 or 3) and the second does not, else NCHW."""
    if len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def scale_map(map2d: np.ndarray, sign: Sign, percentile: float | None = None) -> ScaledMap:
    """Keep the sign's part of the map and divide by its clipping scale.

    The scale is the `percentile`-th percentile of the non-zero |kept values| (None: the
    maximum); values beyond it saturate. Zeros are left out so that a sparse map (a
    rectified gradient's, or the positive half of any map) is not scaled by a percentile
    that lands on zero, which would saturate every pixel that is not.
    """
    m = np.asarray(map2d, dtype=np.float64)
    if sign == "positive":
        m = np.maximum(m, 0.0)
    elif sign == "negative":
        m = np.minimum(m, 0.0)
    elif sign == "absolute":
        m = np.abs(m)
    magnitude = np.abs(m)
    peak = float(magnitude.max()) if magnitude.size else 0.0
    scale = peak
    if percentile is not None and percentile < 100.0 and peak > 0:
        scale = float(np.percentile(magnitude[magnitude > 0], percentile))
    if scale == 0.0:
        return ScaledMap(np.zeros_like(m), 0.0, sign)
    values = np.clip(m / scale, -1.0, 1.0)
    if sign == "negative":
        values = -values  # drawn by strength: the most negative value is 1
    return ScaledMap(values, scale, sign)


def colour_positions(scaled: ScaledMap) -> np.ndarray:
    """Where each pixel falls on the colormap, in [0, 1]: zero is the middle for `all`."""
    if scaled.sign == "all":
        return (scaled.values + 1.0) / 2.0
    return scaled.values


def colour_range(scaled: ScaledMap) -> tuple[float, float]:
    """The saliency values at the colormap's two ends, for a colour bar in saliency units."""
    s = scaled.scale or 1.0
    if scaled.sign == "all":
        return -s, s
    if scaled.sign == "negative":
        return 0.0, -s  # the colormap runs from 0 (no evidence) to -scale (strongest)
    return 0.0, s
