"""A saliency map as an RGB image: colormapped, upsampled to the user's image, blended over it.

Colours come from matplotlib's colormaps and resampling from Pillow; nothing is tabulated
here. The blend is pytorch-grad-cam's `show_cam_on_image` (one weight for the map, the rest
for the image) over a grayscale copy of the image, as Captum's `blended_heat_map` draws it,
so that a red/blue map stays readable on a colourful photo.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .options import DEFAULT_OPTIONS, HeatmapOptions
from .scale import ScaledMap, colour_positions, scale_map

# A heatmap is drawn at the user's image size, but never larger than this on its longer
# side (aspect kept): a 64-megapixel upload would otherwise come back as a PNG larger than
# any gRPC message limit.
MAX_SIDE = 2048


def fit_size(size: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so that neither side exceeds `max_side`."""
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))


def as_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image from an image or an [H, W], [H, W, 1] or [H, W, 3] array (uint8, or float
    in [0, 1])."""
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be [H, W], [H, W, 1|3|4]; got {array.shape}")
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(array)


def tensor_image(
    sample: np.ndarray, mean: Sequence[float], std: Sequence[float], layout: str = "NCHW"
) -> Image.Image:
    """A preprocessed sample ([C, H, W] or [H, W, C], C 1 or 3) back as the image it was
    made from: pixels = value * std + mean, in [0, 1]."""
    hwc = sample.transpose(1, 2, 0) if layout == "NCHW" else sample
    pixels = hwc.astype(np.float64) * np.asarray(std) + np.asarray(mean)
    return as_image(np.clip(pixels, 0.0, 1.0))


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An [H, W] float map resampled (bilinear, Pillow) to (width, height)."""
    height, width = values.shape
    if (width, height) == size:
        return values
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def colourize(scaled: ScaledMap, options: HeatmapOptions, size: tuple[int, int]) -> np.ndarray:
    """The map's colours at (width, height): [H, W, 3] uint8, from the colormap's own table."""
    positions = np.clip(resize_map(colour_positions(scaled), size), 0.0, 1.0)
    return np.asarray(options.cmap(positions, bytes=True))[..., :3]


def render_heatmap(
    map2d: np.ndarray,
    options: HeatmapOptions = DEFAULT_OPTIONS,
    image: Image.Image | np.ndarray | None = None,
    min_side: int = 0,
) -> Image.Image:
    """One sample's [H, W] saliency (see `to_2d`) as an RGB image.

    With `image`, the map is upsampled to the image's own size (capped at MAX_SIDE) and,
    when `options.overlay`, blended over it with `options.opacity`; without, it is drawn
    at its own size. `min_side` enlarges a small result by a whole factor, pixels kept
    sharp (an 8x8 map is a dot on screen).
    """
    scaled = scale_map(map2d, options.sign, options.percentile)
    base = None if image is None else as_image(image)
    height, width = scaled.values.shape
    size = fit_size(base.size) if base is not None else (width, height)
    colours = colourize(scaled, options, size)
    if base is not None and options.overlay:
        gray = base.convert("L").resize(size, Image.Resampling.BILINEAR)
        under = np.asarray(gray, dtype=np.float32)[..., None]
        # float32 and in place: a 2048-pixel overlay is 3 channels x 3 megapixels.
        blend = colours.astype(np.float32)
        blend *= options.opacity
        blend += (1.0 - options.opacity) * under
        colours = np.round(blend, out=blend).astype(np.uint8)
    result = Image.fromarray(colours, mode="RGB")
    return enlarge(result, min_side)


def enlarge(image: Image.Image, min_side: int) -> Image.Image:
    """`image` scaled up by the smallest whole factor that makes its longer side >= min_side."""
    longest = max(image.size)
    if longest == 0 or longest >= min_side:
        return image
    factor = math.ceil(min_side / longest)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def png_bytes(image: Image.Image) -> bytes:
    # zlib level 1: on a 2048x1536 overlay of a photo, 1.0 s and 3.7 MB against 4.6 s and
    # 3.1 MB at Pillow's default 6 (measured here); a server pays this per row.
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
