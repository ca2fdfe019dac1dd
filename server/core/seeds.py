"""The caller's own seed (`ExplainRequest.output_grad`): the upstream gradient of the
explained output, checked against the output before any run.

A seed the explain model would broadcast (a [1, C] seed for a batch of 4) or cast silently
would give a map of another question than the one asked: it must match the output exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInput


@dataclass(frozen=True)
class BuiltSeed:
    """A seed and what it explains, one entry per sample."""

    seed: np.ndarray  # shaped and typed like the explained output
    # The class each row explains, -1 where it is not one class (a seed, a region of all
    # classes).
    classes: np.ndarray
    # The explained scalar of each sample, float64, where it is not sum(output * seed) (a
    # detection's score and IoU); None: that sum, taken from the explain run's output.
    values: np.ndarray | None = None
    detections: list[object] = field(default_factory=list)  # detection.Detection, per row


def check_seed(
    seed: np.ndarray,
    output_dtype: np.dtype,
    output_shape: tuple[int, ...],
) -> None:
    """Refuse a seed whose dtype or shape is not the explained output's (batch included)."""
    if seed.dtype != output_dtype:
        raise InvalidInput(
            f"output_grad dtype is {seed.dtype}; the explained output is {output_dtype}"
        )
    if tuple(seed.shape) != tuple(output_shape):
        raise InvalidInput(
            f"output_grad shape is {list(seed.shape)}; the explained output of this input is "
            f"{list(output_shape)} (batch included)"
        )
    if np.issubdtype(seed.dtype, np.floating) and not np.isfinite(seed).all():
        raise InvalidInput("output_grad has non-finite values (NaN or infinity)")


def given_seed(
    seed: np.ndarray,
    output_dtype: np.dtype,
    known_shape: tuple[int | None, ...],
    batch: int,
    forward: Callable[[], np.ndarray],
) -> BuiltSeed:
    """The caller's seed, checked; `forward` runs the model when the output's shape is not
    fixed by the model (a dimension other than the batch that depends on the input)."""
    shape = (batch, *known_shape[1:])
    if any(d is None for d in shape):
        shape = tuple(forward().shape)
    check_seed(seed, output_dtype, shape)  # type: ignore[arg-type]
    rows = len(seed)
    return BuiltSeed(seed, np.full(rows, -1, np.int64))
