"""How similar two saliency maps are, by the four measures of Adebayo et al. 2018.

A map [C,H,W] is first reduced over channels, as the paper's visualisations do: the signed
map sums the channels, the absolute map sums their absolute values. Then:
- `spearman`: rank correlation of the signed maps;
- `spearman_abs`: rank correlation of the absolute maps;
- `ssim`: structural similarity of the absolute maps, each scaled to [0, 1];
- `hog`: Pearson correlation of the absolute maps' histograms of oriented gradients.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from .report import METRICS

__all__ = ["METRICS", "absolute_map", "signed_map", "similarities"]


def signed_map(saliency: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """[C,H,W] (or [H,W,C]; [H,W] as is) -> [H,W] float64: the channels summed."""
    if saliency.ndim == 2:
        return saliency.astype(np.float64)
    return saliency.astype(np.float64).sum(axis=0 if layout == "NCHW" else 2)


def absolute_map(saliency: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    return signed_map(np.abs(saliency), layout)


def _unit(image: np.ndarray) -> np.ndarray:
    peak = image.max()
    return image / peak if peak > 0 else image


def _correlation(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    # A constant map (all zeros: a dead net) has no ranks to correlate: call it unrelated.
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    fn = spearmanr if kind == "spearman" else pearsonr
    return float(fn(a.ravel(), b.ravel())[0])


def _hog(image: np.ndarray) -> np.ndarray:
    # Cells of an eighth of the map's side (at least 2 pixels), so small maps still get a grid.
    cell = max(2, min(image.shape) // 8)
    return hog(image, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))


def similarities(original: np.ndarray, other: np.ndarray, layout: str = "NCHW") -> dict[str, float]:
    """The four similarities of one sample's maps, each 1 for identical maps."""
    abs_a, abs_b = _unit(absolute_map(original, layout)), _unit(absolute_map(other, layout))
    return {
        "spearman_abs": _correlation("spearman", abs_a, abs_b),
        "spearman": _correlation(
            "spearman", signed_map(original, layout), signed_map(other, layout)
        ),
        "ssim": float(structural_similarity(abs_a, abs_b, data_range=1.0)),
        "hog": _correlation("pearson", _hog(abs_a), _hog(abs_b)),
    }
