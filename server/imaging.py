"""Images in (decode + preprocess) and heatmaps out, with Pillow and numpy only."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import Preprocessing
from .errors import InvalidInput

_FORMATS = ("PNG", "JPEG")
# Refuse decompression bombs long before they reach memory: 64 megapixels is plenty.
_MAX_PIXELS = 64_000_000


def preprocess(data: bytes, pre: Preprocessing) -> np.ndarray:
    """A PNG or JPEG as the model's input tensor: shape [1, C, H, W] or [1, H, W, C], float32."""
    image = (
        _decode(data)
        .convert(pre.color_mode)
        .resize((pre.width, pre.height), Image.Resampling.BILINEAR)
    )
    pixels = np.asarray(image, dtype=np.float32).reshape(pre.height, pre.width, -1) / 255.0
    x = (pixels - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def _decode(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in _FORMATS:
            raise InvalidInput(f"the image is {image.format}; send a PNG or JPEG")
        if image.width * image.height > _MAX_PIXELS:
            raise InvalidInput(f"the image has more than {_MAX_PIXELS} pixels")
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput("the image could not be decoded as PNG or JPEG") from None
    return image


def saliency_magnitude(saliency: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """One sample's saliency [C,H,W] (or [H,W,C]) as an [H,W] map in [0, 1].

    Springenberg et al. show the gradient image itself; a single-channel magnitude (max of
    |gradient| over channels, as Simonyan et al. do) reads the same for gray and colour inputs.
    """
    if saliency.ndim == 3:
        axis = 0 if layout == "NCHW" else 2
        saliency = np.abs(saliency).max(axis=axis)
    magnitude = np.abs(saliency.astype(np.float64))
    peak = magnitude.max() if magnitude.size else 0.0
    return magnitude / peak if peak > 0 else magnitude


def heatmap(saliency: np.ndarray, layout: str = "NCHW", scale: int = 1) -> Image.Image:
    """A colour heatmap of one sample's saliency: black → red → yellow → white."""
    m = saliency_magnitude(saliency, layout)
    rgb = np.stack([np.clip(3 * m, 0, 1), np.clip(3 * m - 1, 0, 1), np.clip(3 * m - 2, 0, 1)], -1)
    image = Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")
    return _upscale(image, scale)


def _upscale(image: Image.Image, scale: int) -> Image.Image:
    if scale == 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
