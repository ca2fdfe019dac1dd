"""Images in (decode + preprocess) and heatmaps out (drawn by onnxplain.render)."""

from __future__ import annotations

import io

import numpy as np
from onnxplain.render import (
    HeatmapOptions,
    guess_layout,
    png_bytes,
    render_heatmap,
    tensor_image,
    to_2d,
)
from PIL import Image, UnidentifiedImageError

from ..store.config import Preprocessing
from .errors import InvalidInput

_FORMATS = ("PNG", "JPEG")
# Refuse decompression bombs long before they reach memory: 64 megapixels is plenty.
_MAX_PIXELS = 64_000_000


def preprocess(data: bytes | Image.Image, pre: Preprocessing) -> np.ndarray:
    """A PNG or JPEG (bytes, or decoded by `decode`) as the model's input tensor:
    shape [1, C, H, W] or [1, H, W, C], float32."""
    image = (
        (decode(data) if isinstance(data, bytes) else data)
        .convert(pre.color_mode)
        .resize((pre.width, pre.height), Image.Resampling.BILINEAR)
    )
    pixels = np.asarray(image, dtype=np.float32).reshape(pre.height, pre.width, -1) / 255.0
    x = (pixels - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def decode(data: bytes) -> Image.Image:
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


def heatmap_pngs(
    saliency: np.ndarray,
    samples: np.ndarray,
    x: np.ndarray,
    image: Image.Image | None,
    pre: Preprocessing | None,
    options: HeatmapOptions,
) -> list[bytes]:
    """One PNG per explained row: the row's map over the image it explains.

    That image is the one the user sent, at its own size, for an image request; the
    tensor de-normalised with the model's preprocessing for a tensor request; none (the
    map alone, at the tensor's size) for a model without preprocessing.
    """
    layout = pre.layout if pre is not None else guess_layout(saliency.shape)
    pngs = []
    for row, sample in enumerate(samples):
        base = image
        if base is None and pre is not None and options.overlay:
            base = tensor_image(x[sample], pre.mean, pre.std, pre.layout)
        try:
            map2d = to_2d(saliency[row], layout)
        except ValueError as exc:
            raise InvalidInput(f"no heatmap for this model: {exc}") from None
        pngs.append(png_bytes(render_heatmap(map2d, options, base)))
    return pngs
