"""The shapes demo in models/shapes/ is what scripts/train_demo_shapes.py makes.

Retraining takes minutes, so these pin the parts that are cheap to regenerate: the sample
images are test scenes the seeded generator draws again pixel for pixel, the config's
preprocessing is the training script's normalisation, and the model classifies each sample
as its file name says.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxplain.sanity import read_report, run_sanity, summarise
from onnxplain.server import Explainer, Repository, SessionFactory
from onnxplain.server.core.explainer import ExplainCall
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


def test_config_is_what_the_training_script_writes() -> None:
    """A retrain rewrites config.toml from the script: the default method must survive it."""
    assert (FOLDER / "config.toml").read_text() == train.CONFIG


def test_default_method_passes_the_stored_sanity_check_and_a_rerun_agrees() -> None:
    config = load_config(FOLDER)
    report = read_report(FOLDER)
    assert report is not None
    stored = {m.method: m for m in report.methods}
    assert not all(m.passed for m in report.methods)  # the check does tell methods apart here
    assert stored[config.default_method].passed, config.default_method
    # The stored verdict is the check's own: run it again on the samples (its default seed).
    assert config.preprocessing is not None
    x = np.concatenate([preprocess(p.read_bytes(), config.preprocessing) for p in SAMPLES])
    rerun = run_sanity(onnx.load(FOLDER / "model.onnx"), x, [config.default_method])
    (again,) = rerun.methods
    assert again.passed
    score = summarise(again.steps, report.score)[report.metric]
    want = summarise(stored[config.default_method].steps, report.score)[report.metric]
    assert score == pytest.approx(want, abs=0.05)


def test_default_method_draws_a_different_map_for_each_top_class(tmp_path: Path) -> None:
    """What the page shows: the top three classes' maps of the default method. A
    class-insensitive method draws the same map three times (guided backprop's correlate at
    0.93 on these samples)."""
    # A copy: links out of the repository are refused (docs/service.md).
    shutil.copytree(FOLDER, tmp_path / "shapes")
    core = Explainer(Repository.load(tmp_path, SessionFactory("cpu", threads=1)), max_batch=8)
    correlations = []
    for path in SAMPLES:
        result = core.explain(ExplainCall(model="shapes", input=path.read_bytes(), top_k=3))
        assert result.method == load_config(FOLDER).default_method
        maps = result.saliency.reshape(3, -1).astype(np.float64)
        pairs = np.corrcoef(maps)[np.triu_indices(3, 1)]
        correlations.extend(pairs)
    assert float(np.mean(correlations)) < 0.5, correlations
