"""Where each explained row of a batch goes: one file per (sample, class), named for both."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def row_paths(output: Path, samples: Sequence[int], targets: Sequence[int]) -> list[Path]:
    """`out.png` for a single explanation; else `out_<sample>_class<target>.png` per row.

    A batch of two explaining classes 3 and 7 writes out_0_class3.png and out_1_class7.png;
    top-2 of one image writes out_0_class7.png and out_0_class1.png.
    """
    if len(samples) != len(targets):
        raise ValueError(f"{len(samples)} samples but {len(targets)} targets")
    if len(samples) == 1:
        return [output]
    names = [
        output.with_name(f"{output.stem}_{s}_class{t}{output.suffix}")
        for s, t in zip(samples, targets)
    ]
    if len(set(names)) != len(names):
        raise ValueError("two rows explain the same class of the same sample")
    return names
