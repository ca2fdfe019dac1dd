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
from PIL import Image, JpegImagePlugin, PngImagePlugin

from ..store.config import Preprocessing
from .errors import InvalidImage, InvalidInput

# What a PNG or a JPEG starts with. Only these two parsers ever see a client's bytes.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile),
    (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
)
# The largest image decoded, in pixels: above it the image is refused from its header,
# before any pixel is decompressed (a 21 KB PNG can declare 13,400 x 13,400 1-bit pixels).
# 50 megapixels takes a full-size photo from a 48 or 50 MP camera (8,160 x 6,120); decoding
# one costs about 150 MB and 2 s here, for a model that then resizes it to e.g. 224 x 224.
# PIL's own guard (Image.MAX_IMAGE_PIXELS, 89 MP a warning, 179 MP an error) never runs:
# the plugins are called directly, so this limit is the only one. `onnxplain serve
# --max-image-megapixels` sets it.
DEFAULT_MAX_PIXELS = 50_000_000
_max_pixels = DEFAULT_MAX_PIXELS
# Longest reason from the decoder passed on to the client.
_REASON_CHARS = 200


def set_max_pixels(pixels: int) -> None:
    """The server's image size limit, in pixels (process-wide, as PIL's own is)."""
    global _max_pixels
    if pixels <= 0:
        raise ValueError(f"the image pixel limit must be positive, not {pixels}")
    _max_pixels = pixels


def max_pixels() -> int:
    return _max_pixels


def preprocess(data: bytes | Image.Image, pre: Preprocessing) -> np.ndarray:
    """A PNG or JPEG (bytes, or decoded by `decode`) as the model's input tensor:
    shape [1, C, H, W] or [1, H, W, C], float32."""
    decoded = decode(data) if isinstance(data, bytes) else data
    try:
        image = decoded.convert(pre.color_mode)
    except (ValueError, OSError) as exc:  # a pixel mode PIL cannot convert
        raise InvalidImage(
            f"the image's {decoded.mode} pixels cannot be converted to {pre.color_mode}: "
            f"{_reason(exc)}"
        ) from None
    image = image.resize((pre.width, pre.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).reshape(pre.height, pre.width, -1) / 255.0
    x = (pixels - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def decode(data: bytes) -> Image.Image:
    """The decoded PNG or JPEG; InvalidImage, saying what is wrong, for anything else.

    Every failure is the client's bytes, so every one is InvalidImage: a size over the
    limit (read from the header, nothing decompressed), another format, a damaged file.
    """
    factory = next((f for magic, f in _SIGNATURES if data.startswith(magic)), None)
    if factory is None:
        other = _other_format(data)
        if other is not None:
            raise InvalidImage(f"the image is {other}; send a PNG or JPEG")
        raise InvalidImage("the image could not be decoded as PNG or JPEG")
    kind = factory.format
    try:
        image = factory(io.BytesIO(data))
    except Exception as exc:  # any way a header fails to parse is the client's fault
        raise InvalidImage(f"the {kind} image could not be decoded: {_reason(exc)}") from None
    width, height = image.size
    if width * height > _max_pixels:
        image.close()
        raise InvalidImage(
            f"the image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"this server decodes images of at most {_max_pixels / 1e6:g} megapixels: "
            "send a smaller one (the model resizes it to its own input size anyway)"
        )
    try:
        image.load()
    except Exception as exc:  # truncated, corrupt, or a chunk over PIL's own limits
        raise InvalidImage(f"the {kind} image could not be decoded: {_reason(exc)}") from None
    return image


def _other_format(data: bytes) -> str | None:
    """The name of a common image format `data` starts with, from its signature alone
    (never parsed: only the PNG and JPEG parsers see a client's bytes)."""
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "WebP"
    if data[4:8] == b"ftyp":
        return "HEIF/AVIF"
    signatures = {b"GIF8": "GIF", b"BM": "BMP", b"II*\0": "TIFF", b"MM\0*": "TIFF"}
    return next((name for magic, name in signatures.items() if data.startswith(magic)), None)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


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
