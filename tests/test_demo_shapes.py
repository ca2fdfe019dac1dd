"""The shapes demo in models/shapes/ is what scripts/train_demo_shapes.py makes.

Retraining takes minutes, so these pin the parts that are cheap to regenerate: the sample
images are test scenes the seeded generator draws again pixel for pixel, the config's
preprocessing is the training script's normalisation, and the model classifies each sample
as its file name says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxplain.server.core.imaging import preprocess
from onnxplain.server.store.config import load_config
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "models" / "shapes"
sys.path.insert(0, str(REPO / "scripts"))

import train_demo_shapes as train  # noqa: E402
from shapes_dataset import CLASSES, make_dataset  # noqa: E402

SAMPLES = sorted((FOLDER / "samples").glob("*.png"))


def test_samples_are_scenes_the_seeded_generator_draws_again() -> None:
    images, labels = make_dataset(1200, seed=train.SEED + 1)  # the script's test set
    assert [p.stem for p in SAMPLES] == sorted(CLASSES)
    for path in SAMPLES:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        first = images[np.flatnonzero(labels == CLASSES.index(path.stem))]
        assert any(np.array_equal(pixels, candidate) for candidate in first), path.name


def test_config_preprocessing_is_the_training_normalisation() -> None:
    config = load_config(FOLDER)
    assert config.preprocessing is not None and config.labels == CLASSES
    for path in SAMPLES:
        pixels = np.asarray(Image.open(path).convert("RGB"))[None]
        served = preprocess(path.read_bytes(), config.preprocessing)
        np.testing.assert_allclose(served, train.to_tensor(pixels).numpy(), atol=1e-6)


def test_model_names_each_sample_by_its_file_name() -> None:
    config = load_config(FOLDER)
    assert config.preprocessing is not None
    x = np.concatenate([preprocess(p.read_bytes(), config.preprocessing) for p in SAMPLES])
    session = ort.InferenceSession(str(FOLDER / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(["logits"], {"input": x})[0]
    assert [config.labels[k] for k in scores.argmax(1)] == [p.stem for p in SAMPLES]
