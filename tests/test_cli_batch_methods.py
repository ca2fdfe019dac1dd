"""`onnxplain convert` for SmoothGrad and Integrated Gradients: the options reach the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite.methods.integrated_gradients import (
    Baseline,
    build_integrated_gradients_model,
)
from onnxplain.graph_rewrite.methods.smoothgrad import build_smoothgrad_model, smoothgrad_noise
from test_cli_rewrite import run_cli

from helpers.fd import session
from helpers.tiny import tiny_classifier

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
SEED = np.eye(5, dtype=np.float32)[[1, 4]]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(), str(path))
    return path


def test_smoothgrad_with_a_seed_stores_that_noise(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "sg.onnx"
    result = run_cli(
        "convert", model_file, "-o", out, "--method", "smoothgrad", "--gradient", "guided",
        "--sigma", "0.3", "--seed", "7", "--samples", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stored = onnx.load(str(out))
    assert {i.name for i in stored.graph.input} == {"image", "output_grad"}
    got = session(stored).run(["saliency"], {"image": X, "output_grad": SEED})[0]
    # The same noise fed to the model that takes it as an input, for both samples.
    fed = build_smoothgrad_model(tiny_classifier(), "guided", 0.3)
    z = np.repeat(smoothgrad_noise((1, 3, 8, 8), 3, seed=7), 2, axis=1)
    want = session(fed).run(["saliency"], {"image": X, "output_grad": SEED, "smoothgrad_noise": z})[
        0
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_options_reach_the_model(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "ig.onnx"
    result = run_cli(
        "convert", model_file, "-o", out, "--method", "integrated_gradients", "--steps", "7",
        "--integration", "riemann_trapezoid", "--baseline", "constant:0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = session(onnx.load(str(out))).run(["saliency"], {"image": X, "output_grad": SEED})[0]
    direct = build_integrated_gradients_model(
        tiny_classifier(), 7, "riemann_trapezoid", Baseline("constant", 0.5)
    )
    want = session(direct).run(["saliency"], {"image": X, "output_grad": SEED})[0]
    np.testing.assert_array_equal(got, want)
    other = build_integrated_gradients_model(tiny_classifier(), 7, "riemann_trapezoid")
    assert not np.allclose(
        want, session(other).run(["saliency"], {"image": X, "output_grad": SEED})[0]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--baseline", "fog"), "unknown baseline 'fog'"),
        (("--baseline", "constant"), "needs a value"),
        (("--steps", "0"), "1 to 4096 steps"),
    ],
)
def test_bad_options_are_one_line_errors(
    model_file: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "ig.onnx"
    result = run_cli("convert", model_file, "-o", out, "--method", "integrated_gradients", *args)
    assert result.returncode in (1, 2)
    assert message in result.stderr and "Traceback" not in result.stderr
