"""A procedurally generated image dataset: one shape per image on a cluttered, textured scene.

Nothing is downloaded: every image is drawn from a seeded numpy generator, so the training
script can rebuild the same dataset anywhere. The scene is built so that a classifier has to
find the object: the background is coloured noise at several scales with stripes, and each
image carries small distractors (thin strokes, dots) in the object's own palette, so colour
and texture alone do not give the class away.

    from shapes_dataset import CLASSES, make_dataset
    images, labels = make_dataset(1000, seed=0)   # uint8 N,H,W,3 and int64 N
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 48
CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Low-frequency colour blobs plus fine grain plus faint stripes at a random angle."""
    coarse = rng.uniform(40, 200, size=(4, 4, 3))
    blobs = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(blobs, dtype=np.float32)
    pixels += rng.normal(0, 14, size=(size, size, 3))
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size]
    period = rng.uniform(5, 12)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    pixels += (stripes * rng.uniform(5, 20))[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _polygon(cx: float, cy: float, radii: list[float], turn: float) -> list[tuple[float, float]]:
    n = len(radii)
    return [
        (
            cx + r * math.cos(turn + 2 * math.pi * i / n),
            cy + r * math.sin(turn + 2 * math.pi * i / n),
        )
        for i, r in enumerate(radii)
    ]


def _draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, turn: float, fill: tuple
) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=max(2, round(r * 0.35)))
    elif kind == "square":
        draw.polygon(_polygon(cx, cy, [r * 1.1] * 4, turn), fill=fill)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, [r * 1.2] * 3, turn), fill=fill)
    elif kind == "star":
        draw.polygon(_polygon(cx, cy, [r * 1.25, r * 0.5] * 5, turn), fill=fill)
    elif kind == "cross":
        arm = max(2.0, r * 0.38)
        for angle in (turn, turn + math.pi / 2):
            dx, dy = math.cos(angle) * r * 1.15, math.sin(angle) * r * 1.15
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=fill, width=round(arm))
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))  # type: ignore[return-value]


def draw_scene(rng: np.random.Generator, label: int, size: int = SIZE) -> np.ndarray:
    """One uint8 H,W,3 image showing the shape CLASSES[label] among distractors."""
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    fill = _colour(rng)
    # Distractors: strokes and dots, some in the object's colour, so colour is no shortcut.
    for _ in range(int(rng.integers(2, 6))):
        colour = fill if rng.random() < 0.5 else _colour(rng)
        x0, y0 = rng.uniform(0, size, size=2)
        length, angle = rng.uniform(4, 12), rng.uniform(0, 2 * math.pi)
        x1, y1 = x0 + length * math.cos(angle), y0 + length * math.sin(angle)
        draw.line((x0, y0, x1, y1), fill=colour, width=1)
    for _ in range(int(rng.integers(1, 4))):
        colour = fill if rng.random() < 0.5 else _colour(rng)
        x, y = rng.uniform(0, size, size=2)
        dot = rng.uniform(1, 2.5)
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
    r = rng.uniform(size * 0.14, size * 0.24)
    cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
    _draw_shape(draw, CLASSES[label], cx, cy, r, rng.uniform(0, 2 * math.pi), fill)
    # A slight blur, as a camera gives, so edges are not single-pixel steps.
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(image, dtype=np.uint8)


def make_dataset(count: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """`count` images with balanced labels in a seeded order: uint8 N,H,W,3 and int64 N."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.int64) % len(CLASSES)
    rng.shuffle(labels)
    images = np.stack([draw_scene(rng, int(label), size) for label in labels])
    return images, labels
