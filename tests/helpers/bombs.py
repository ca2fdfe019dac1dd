"""Images that declare far more pixels than their bytes, made by hand (zlib, struct): what a
client can send to make a server decode gigabytes from a few kilobytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 13_400, height: int = 13_400, bit_depth: int = 1) -> bytes:
    """A valid grayscale PNG of `width` x `height` zero pixels; 13,400 x 13,400 1-bit (179.6
    megapixels, over PIL's own 178.9 M error limit) compresses to about 21 KB."""
    row = 1 + (width * bit_depth + 7) // 8  # the filter byte, then the packed pixels
    pixels = zlib.compress(b"\0" * (row * height), 9)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` 8-bit RGB pixels and holds none: what a client
    sends to make a server allocate them before it finds the data missing."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def jpeg_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to declare `width` x
    `height` pixels (65,000 x 65,000: 4.2 gigapixels)."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2).
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png(size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 100).save(buffer, "PNG")
    return buffer.getvalue()


def noisy_png(size: tuple[int, int] = (32, 32)) -> bytes:
    """Random pixels: a PNG whose pixel data fills most of the file, so a cut loses some."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
