"""Targets over a region of a dense output, and at one position of a sequence output, built
into seeds from the forward run's output.

A region target explains sum over the region of the chosen channels, weighted by a mask (as
pytorch-grad-cam's SemanticSegmentationTarget: `(output[c] * mask).sum()`); the output is
[N, C, H, W]. Its seed is the mask on each chosen channel, zero elsewhere. A box is given in
the model input's pixels and scaled to the output's grid (a detector heat map is often
smaller than its input); a mask of another size than the output is resized (nearest).

A position target explains one class at one step of a sequence output [N, T, C] (a CTC
recogniser's time step, a token): a one-hot seed at [n, t, c], c the step's top class per
sample unless given.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import InvalidInput
from .seeds import BuiltSeed

# A mask PNG larger than this is refused before it is decoded (a decompression bomb).
MAX_MASK_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Box:
    """A rectangle in input pixels, x right, y down."""

    x0: float
    y0: float
    x1: float
    y1: float

    def check(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(np.isfinite(v) for v in values):
            raise InvalidInput(f"the box {values} has non-finite coordinates")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise InvalidInput(f"the box {values} is empty: it needs x0 < x1 and y0 < y1")


@dataclass(frozen=True)
class RegionTarget:
    """Exactly one of mask_png, mask, box; `classes` empty: every channel."""

    mask_png: bytes | None = None
    mask: np.ndarray | None = None  # [H, W] or [N, H, W]
    box: Box | None = None
    classes: Sequence[int] = ()


@dataclass(frozen=True)
class PositionTarget:
    position: int
    class_index: int | None = None  # None: the step's top class, per sample


def region_seed(target: RegionTarget, output: np.ndarray, input_hw: tuple[int, int]) -> BuiltSeed:
    """The seed of `target` on `output` ([N, C, H, W], from the forward run)."""
    if output.ndim != 4:
        raise InvalidInput(
            f"a region target needs a dense output [N, C, H, W]; this model's is "
            f"{list(output.shape)}"
        )
    n, channels, height, width = output.shape
    classes = _channels(target.classes, channels)
    weights = _weights(target, n, (height, width), input_hw)  # [N or 1, H, W]
    seed = np.zeros(output.shape, dtype=output.dtype)
    seed[:, classes] = weights[:, None].astype(output.dtype)
    explained = np.full(n, classes[0] if len(classes) == 1 else -1, np.int64)
    return BuiltSeed(seed, explained)


def position_seed(target: PositionTarget, output: np.ndarray) -> BuiltSeed:
    """The seed of `target` on `output` ([N, T, C], from the forward run)."""
    if output.ndim != 3:
        raise InvalidInput(
            f"a position target needs a sequence output [N, T, C]; this model's is "
            f"{list(output.shape)}"
        )
    n, steps, classes = output.shape
    if not 0 <= target.position < steps:
        raise InvalidInput(f"position {target.position} is out of range: the output has {steps}")
    if target.class_index is None:
        chosen = output[:, target.position].argmax(axis=1).astype(np.int64)
    elif 0 <= target.class_index < classes:
        chosen = np.full(n, target.class_index, np.int64)
    else:
        raise InvalidInput(f"class {target.class_index} is out of range: the output has {classes}")
    seed = np.zeros(output.shape, dtype=output.dtype)
    seed[np.arange(n), target.position, chosen] = 1
    return BuiltSeed(seed, chosen)


def _channels(given: Sequence[int], channels: int) -> list[int]:
    if not given:
        return list(range(channels))
    bad = [c for c in given if not 0 <= c < channels]
    if bad:
        raise InvalidInput(f"class {bad[0]} is out of range: the output has {channels} channels")
    if len(set(given)) != len(given):
        raise InvalidInput(f"the region's classes {list(given)} repeat a class")
    return list(given)


def _weights(
    target: RegionTarget, n: int, out_hw: tuple[int, int], input_hw: tuple[int, int]
) -> np.ndarray:
    given = [v is not None for v in (target.mask_png, target.mask, target.box)]
    if sum(given) != 1:
        raise InvalidInput("a region target needs exactly one of a mask PNG, a mask or a box")
    if target.box is not None:
        return _box_mask(target.box, out_hw, input_hw)[None]
    mask = _decode_mask(target.mask_png) if target.mask_png is not None else target.mask
    assert mask is not None
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or len(mask) not in (1, n):
        raise InvalidInput(
            f"the region's mask is {list(mask.shape)}; it must be [H, W] or [{n}, H, W]"
        )
    if not np.issubdtype(mask.dtype, np.number) or not np.isfinite(mask).all():
        raise InvalidInput("the region's mask must hold finite numbers")
    if min(mask.shape[1:]) < 1:
        raise InvalidInput("the region's mask is empty")
    return _resize_nearest(mask.astype(np.float64), out_hw)


def _box_mask(box: Box, out_hw: tuple[int, int], input_hw: tuple[int, int]) -> np.ndarray:
    """1 on the output cells whose centres fall inside the box scaled to the output's grid."""
    box.check()
    height, width = out_hw
    ys = (np.arange(height) + 0.5) * input_hw[0] / height  # cell centres, in input pixels
    xs = (np.arange(width) + 0.5) * input_hw[1] / width
    inside = ((ys >= box.y0) & (ys < box.y1))[:, None] & ((xs >= box.x0) & (xs < box.x1))[None]
    if not inside.any():
        raise InvalidInput(
            f"the box {(box.x0, box.y0, box.x1, box.y1)} covers no cell of the {height}x{width} "
            f"output (input {input_hw[0]}x{input_hw[1]} pixels)"
        )
    return inside.astype(np.float64)


def _decode_mask(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise InvalidInput(f"the region's mask must be a PNG, not {image.format}")
            if image.width * image.height > MAX_MASK_PIXELS:
                raise InvalidInput(
                    f"the region's mask is {image.width}x{image.height}; at most "
                    f"{MAX_MASK_PIXELS} pixels"
                )
            return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except InvalidInput:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"the region's mask is not a readable PNG: {exc}") from None


def _resize_nearest(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """[K, h, w] to [K, H, W], each output cell taking the mask pixel under its centre."""
    h, w = mask.shape[1:]
    if (h, w) == out_hw:
        return mask
    rows = ((np.arange(out_hw[0]) + 0.5) * h / out_hw[0]).astype(np.int64)
    cols = ((np.arange(out_hw[1]) + 0.5) * w / out_hw[1]).astype(np.int64)
    return mask[:, rows][:, :, cols]
