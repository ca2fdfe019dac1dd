"""Train the demo model that ships in models/digits/: an All-CNN on scikit-learn's 8x8 digits.

The network follows Springenberg et al.'s all-convolutional idea: strided convolutions
instead of pooling, ReLU, and a global average pool over per-class maps in place of dense
layers. Seeded and single-threaded, so a rerun gives the same weights; under a minute on
two CPU cores.

    python scripts/train_demo.py [--out models/digits] [--epochs 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
SIZE = 8
# The digits' pixels run 0..16; the config's mean/std apply to pixels scaled to [0, 1].
MEAN = 0.3
STD = 0.4
SAMPLE_DIGITS = (0, 3, 5, 7, 8)  # the first test image of each is saved as a sample input

CONFIG = f"""\
# The demo: an All-CNN trained on scikit-learn's 8x8 digits by scripts/train_demo.py.
input = "input"
output = "logits"
labels = "labels.txt"
default_method = "guided"

[preprocessing]
height = {SIZE}
width = {SIZE}
mean = [{MEAN}]
std = [{STD}]
layout = "NCHW"
color_mode = "L"
"""


def all_cnn(classes: int = 10) -> nn.Module:
    """Convs only: stride-2 convs downsample, a 1x1 conv gives per-class maps, then a GAP."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),  # 8x8 -> 4x4
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),  # 4x4 -> 2x2
        nn.ReLU(),
        nn.Conv2d(64, classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N,1,8,8 in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target
    )
    return x_train, x_test, y_train.astype(np.int64), y_test.astype(np.int64)


def normalise(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((x - MEAN) / STD)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = normalise(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(normalise(x)).argmax(1).numpy()
    return float((pred == y).mean())


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def save_samples(out: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Each sample as an 8-bit grayscale PNG and as the preprocessed .npy tensor."""
    samples = out / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    for digit in SAMPLE_DIGITS:
        i = int(np.flatnonzero(y == digit)[0])
        stem = f"digit{digit}"
        pixels = np.round(x[i, 0] * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(samples / f"{stem}.png")
        # The tensor the server builds from that PNG: rounded pixels, then mean/std.
        tensor = ((pixels.astype(np.float32) / 255.0 - MEAN) / STD)[None, None]
        np.save(samples / f"{stem}.npy", tensor.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/digits"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # thread count changes float summation order, hence the weights
    x_train, x_test, y_train, y_test = load_data()
    model = all_cnn()
    train(model, x_train, y_train, args.epochs)
    print(f"test accuracy: {accuracy(model, x_test, y_test):.3f} on {len(y_test)} images")

    args.out.mkdir(parents=True, exist_ok=True)
    export(model, args.out / "model.onnx")
    (args.out / "config.toml").write_text(CONFIG)
    (args.out / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))
    save_samples(args.out, x_test, y_test)
    print(f"wrote {args.out}/model.onnx, config.toml, labels.txt and samples/")


if __name__ == "__main__":
    main()
