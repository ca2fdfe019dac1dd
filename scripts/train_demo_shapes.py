"""Train the demo model in models/shapes/: an All-CNN on generated 48x48 cluttered shape scenes.

The images come from scripts/shapes_dataset.py (drawn from a seeded generator, nothing is
downloaded). The network is Springenberg et al.'s all-convolutional net scaled down: 3x3
convs with ReLU, stride-2 convs instead of pooling, a 1x1 conv to per-class maps and a
global average pool in place of dense layers. Seeded and single-threaded, so a rerun on the
same machine and torch build writes the same bytes; another CPU (other SIMD kernels) or
torch version may round differently and so train slightly different weights. A few minutes
on one CPU core.

    python scripts/train_demo_shapes.py [--out models/shapes] [--epochs 6] [--train 8000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_dataset import CLASSES, SIZE, make_dataset

SEED = 0
MEAN = (0.5, 0.5, 0.5)  # applied to pixels scaled to [0, 1]
STD = (0.25, 0.25, 0.25)
SAMPLES_PER_CLASS = 1  # test images saved to samples/ (correctly classified ones)

CONFIG = f"""\
# The demo: an All-CNN trained on generated {SIZE}x{SIZE} shape scenes by
# scripts/train_demo_shapes.py (images from scripts/shapes_dataset.py).
input = "input"
output = "logits"
labels = "labels.txt"
# Grad-CAM: class-discriminative (the top classes get different maps) and the clearest
# pass of the stored sanity check (sanity.json); guided backprop fails it here.
default_method = "gradcam"

[preprocessing]
height = {SIZE}
width = {SIZE}
mean = {list(MEAN)}
std = {list(STD)}
layout = "NCHW"
color_mode = "RGB"
"""


def all_cnn(classes: int = len(CLASSES)) -> nn.Module:
    """Convs only: three stride-2 convs downsample 48 -> 6, a 1x1 conv gives class maps, GAP.

    Batch normalisation makes a few epochs enough; the exporter folds it into the convs,
    so the ONNX model is the plain All-CNN: Conv, Relu, GlobalAveragePool.
    """
    widths = [(3, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 64, 2)]
    layers: list[nn.Module] = []
    for c_in, c_out, stride in widths:
        conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU()]
    layers += [nn.Conv2d(widths[-1][1], classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N,H,W,3 -> the float N,3,H,W tensor the server builds from the same pixels."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        took = time.perf_counter() - start
        print(f"epoch {epoch + 1}: loss {total / len(x):.3f} ({took:.0f} s)", flush=True)


def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def save_samples(out: Path, images: np.ndarray, labels: np.ndarray, pred: np.ndarray) -> None:
    """The first correctly classified test images of each class, as PNGs."""
    samples = out / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(CLASSES):
        hits = np.flatnonzero((labels == label) & (pred == label))[:SAMPLES_PER_CLASS]
        for k, i in enumerate(hits):
            suffix = "" if SAMPLES_PER_CLASS == 1 else str(k)
            Image.fromarray(images[i]).save(samples / f"{name}{suffix}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/shapes"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=8000, help="training images")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # thread count changes float summation order, hence the weights
    train_images, train_labels = make_dataset(args.train, seed=SEED)
    test_images, test_labels = make_dataset(1200, seed=SEED + 1)
    model = all_cnn()
    train(model, to_tensor(train_images), torch.from_numpy(train_labels), args.epochs)
    pred = predict(model, to_tensor(test_images))
    print(f"test accuracy: {(pred == test_labels).mean():.3f} on {len(test_labels)} images")

    args.out.mkdir(parents=True, exist_ok=True)
    export(model, args.out / "model.onnx")
    (args.out / "config.toml").write_text(CONFIG)
    (args.out / "labels.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    save_samples(args.out, test_images, test_labels, pred)
    print(f"wrote {args.out}/model.onnx, config.toml, labels.txt and samples/")


if __name__ == "__main__":
    main()
