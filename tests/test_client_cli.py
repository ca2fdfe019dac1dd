"""`onnxplain explain` and `onnxplain models` against a server on a loopback socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxplain.cli import main

from test_server_support import SAMPLES, direct_explain, make_repository, running_server


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(make_repository(tmp_path_factory.mktemp("models"))) as (service, _):
        yield f"127.0.0.1:{service.port}"


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_explain_npy_to_npy(address: str, tmp_path: Path, method: str) -> None:
    out = tmp_path / "saliency.npy"
    argv = [
        "explain",
        "--server",
        address,
        "--model",
        "digits",
        "--method",
        method,
        "--target",
        "5",
        str(SAMPLES / "digit5.npy"),
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    expected = direct_explain(method, np.load(SAMPLES / "digit5.npy"), np.array([5]))[0]
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)


def test_explain_image_to_heatmap_png(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "heatmap.png"
    assert (
        main(
            [
                "explain",
                "--server",
                address,
                "--model",
                "digits",
                str(SAMPLES / "digit0.png"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    heat = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    assert heat.shape == (8, 8, 3)
    # Brightness should rank pixels as the saliency magnitude does.
    saliency = np.abs(direct_explain("guided", np.load(SAMPLES / "digit0.npy"))[0][0, 0])
    assert np.unravel_index(heat.sum(-1).argmax(), (8, 8)) == np.unravel_index(
        saliency.argmax(), (8, 8)
    )
    assert "guided saliency of class" in capsys.readouterr().out


def test_explain_reports_server_errors(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "explain",
        "--server",
        address,
        "--model",
        "nope",
        str(SAMPLES / "digit0.png"),
        "-o",
        str(tmp_path / "x.npy"),
    ]
    assert main(argv) == 1
    assert "NOT_FOUND" in capsys.readouterr().err and not (tmp_path / "x.npy").exists()


def test_models_lists_every_model(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--server", address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("digits\tinput [-1, 1, 8, 8]")
    assert any(line.startswith("norule\tunavailable:") for line in lines)
