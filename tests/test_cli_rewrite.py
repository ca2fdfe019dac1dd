"""`onnxplain convert` and `onnxplain check` as a user runs them: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from fd import session
from tiny import tiny_classifier


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onnxplain", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,  # not the repo root, whose onnxplain/ folder is partial
    )


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(), str(path))
    return path


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_convert_writes_a_runnable_explain_model(
    model_file: Path, tmp_path: Path, method: str
) -> None:
    out = tmp_path / f"{method}.onnx"
    result = run_cli("convert", model_file, "-o", out, "--method", method)
    assert result.returncode == 0, result.stderr
    explain = onnx.load(str(out))
    x = np.ones((1, 3, 8, 8), np.float32)
    saliency = session(explain).run(
        ["saliency"], {"image": x, "output_grad": np.ones((1, 5), np.float32)}
    )
    assert saliency[0].shape == (1, 3, 8, 8)


def test_check_passes_a_supported_model(model_file: Path) -> None:
    result = run_cli("check", model_file)
    assert result.returncode == 0, result.stderr
    assert "'image'" in result.stdout and "'logits'" in result.stdout


def test_check_and_convert_list_unsupported_ops_without_a_traceback(tmp_path: Path) -> None:
    model = tiny_classifier()
    model.graph.node[1].op_type = "Det"
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    for args in (("check", path), ("convert", path, "-o", tmp_path / "out.onnx")):
        result = run_cli(*args)
        assert result.returncode == 1
        assert "Det (node 'relu1', opset 17)" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"not a model", "not a readable ONNX model")],
)
def test_unreadable_models_get_a_one_line_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    result = run_cli("convert", path, "-o", tmp_path / "out.onnx")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_name_clash_is_refused_and_a_flag_renames(model_file: Path, tmp_path: Path) -> None:
    model = onnx.load(str(model_file))
    model.graph.node[0].output[0] = "output_grad"
    model.graph.node[1].input[0] = "output_grad"
    onnx.save(model, str(model_file))
    result = run_cli("convert", model_file, "-o", tmp_path / "out.onnx")
    assert result.returncode == 1 and "'output_grad'" in result.stderr
    result = run_cli("convert", model_file, "-o", tmp_path / "out.onnx", "--grad-name", "seed")
    assert result.returncode == 0, result.stderr
    assert [i.name for i in onnx.load(str(tmp_path / "out.onnx")).graph.input] == ["image", "seed"]
