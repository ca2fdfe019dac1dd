"""Images in (decode + preprocess) and heatmaps out (drawn by onnxplain.render)."""

from __future__ import annotations

import io

import numpy as np
from onnxplain.render import HeatmapOptions, enlarge, png_bytes, render_heatmap, to_2d
from PIL import Image, UnidentifiedImageError

from .config import Preprocessing
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
    layout = pre.layout if pre is not None else guess_layout(saliency)
    pngs = []
    for row, sample in enumerate(samples):
        base = image
        if base is None and pre is not None and options.overlay:
            base = tensor_image(x[sample], pre)
        try:
            map2d = to_2d(_as_image_map(saliency[row]), layout)
        except ValueError as exc:
            raise InvalidInput(f"no heatmap for this model: {exc}") from None
        pngs.append(png_bytes(render_heatmap(map2d, options, base)))
    return pngs


def guess_layout(saliency: np.ndarray) -> str:
    """NHWC when the last axis looks like channels (1 or 3) and the second does not."""
    if saliency.ndim == 4 and saliency.shape[-1] in (1, 3) and saliency.shape[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def _as_image_map(sample: np.ndarray) -> np.ndarray:
    # A flat feature vector is drawn as one row of pixels rather than refused.
    return sample.reshape(1, -1) if sample.ndim == 1 else sample


def tensor_image(sample: np.ndarray, pre: Preprocessing) -> Image.Image:
    """A preprocessed sample ([C, H, W] or [H, W, C]) back as the image it was made from."""
    hwc = sample.transpose(1, 2, 0) if pre.layout == "NCHW" else sample
    pixels = hwc.astype(np.float64) * np.asarray(pre.std) + np.asarray(pre.mean)
    array = np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def heatmap(saliency: np.ndarray, layout: str = "NCHW", scale: int = 1) -> Image.Image:
    """|saliency| of one sample, scale x its size: kept for scripts/figure.py until it draws
    with onnxplain.render's figures directly."""
    map2d = np.abs(to_2d(saliency, layout))
    image = render_heatmap(map2d, HeatmapOptions(sign="absolute", colormap="hot"))
    return enlarge(image, image.width * scale)
