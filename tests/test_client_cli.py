"""`onnxplain explain` and `onnxplain models` against a server on a loopback socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from onnxplain.render import render_heatmap, tensor_image, to_2d
from PIL import Image

from onnxplain.cli import main

from helpers.server_support import SAMPLES, direct_explain, make_repository, running_server


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


def explain(address: str, *args: str) -> int:
    return main(["explain", "--server", address, "--model", "digits", *args])


def test_explain_image_to_a_figure_with_a_colour_bar(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "heatmap.png"
    assert explain(address, str(SAMPLES / "digit0.png"), "-o", str(out)) == 0
    figure = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    assert min(figure.shape[:2]) >= 200  # a figure, not the 8x8 map
    # The colour bar shows the whole diverging colormap: both of its ends are in the file.
    cmap = matplotlib.colormaps["RdBu_r"]
    for end in (0.0, 1.0):
        colour = np.asarray(cmap(end)[:3]) * 255
        assert (np.abs(figure - colour).max(axis=-1) <= 8).sum() >= 5
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:4] == ["sample", "0", "class", "0"] and "score" in line and " p " in line


def test_a_batch_writes_one_file_per_sample_named_by_its_class(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "batch.npy"
    x = np.concatenate([np.load(SAMPLES / f"digit{d}.npy") for d in (3, 7)])
    np.save(batch, x)
    out = tmp_path / "batch.png"
    assert explain(address, "--target", "3,7", "--no-colorbar", str(batch), "-o", str(out)) == 0
    assert sorted(p.name for p in tmp_path.glob("batch_*.png")) == [
        "batch_0_class3.png",
        "batch_1_class7.png",
    ]
    assert not out.exists()
    saliency = direct_explain("guided", x, np.array([3, 7]))[0]
    for row, name in enumerate(["batch_0_class3.png", "batch_1_class7.png"]):
        got = np.asarray(Image.open(tmp_path / name).convert("RGB"), dtype=np.float64)
        assert got.shape == (256, 256, 3)  # 8x8 enlarged by a whole factor
        under = tensor_image(x[row], (0.3,), (0.4,))
        expected = render_heatmap(to_2d(saliency[row]), image=under, min_side=256)
        assert np.abs(got - np.asarray(expected, np.float64)).max() <= 2
    text = capsys.readouterr().out
    assert "class 3 (3)" in text and "batch_1_class7.png" in text


def test_targets_by_name_and_top_k(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(SAMPLES / "digit5.png")
    assert explain(address, "--target", "5", image, "-o", str(tmp_path / "a.npy")) == 0
    assert explain(address, "--top-k", "2", image, "-o", str(tmp_path / "top.npy")) == 0
    top = np.load(tmp_path / "top.npy")
    np.testing.assert_array_equal(top[0], np.load(tmp_path / "a.npy")[0])  # 5 is the best
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith("  sample")]
    assert [r[3] for r in rows] == ["5", "5", rows[2][3]] and rows[2][3] != "5"
    probabilities = [float(r[r.index("p") + 1]) for r in rows[1:]]
    assert probabilities[0] > probabilities[1] and sum(probabilities) <= 1.0 + 1e-3
    assert explain(address, "--target", "cat", image, "-o", str(tmp_path / "b.npy")) == 1
    assert "no class named 'cat'" in capsys.readouterr().err


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
