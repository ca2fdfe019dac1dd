"""`onnxplain convert` and `onnxplain check` as a user runs them: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import ALL_METHODS

from helpers.fd import session
from helpers.tiny import tiny_classifier


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


def test_input_shape_fixes_the_shapes_convert_writes(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "fixed.onnx"
    result = run_cli("convert", model_file, "-o", out, "--input-shape", "image:2,3,16,16")
    assert result.returncode == 0, result.stderr
    explain = onnx.load(str(out))
    dims = [d.dim_value for d in explain.graph.output[-1].type.tensor_type.shape.dim]
    assert dims == [2, 3, 16, 16]
    x = np.ones((2, 3, 16, 16), np.float32)
    saliency = session(explain).run(
        ["saliency"], {"image": x, "output_grad": np.ones((2, 5), np.float32)}
    )
    assert saliency[0].shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("image=1,3,8,8", "expected NAME:D1,D2,..."),
        ("image:1,3,x,8", "positive integers separated by commas"),
        ("image:1,3,-1,8", "must be positive integers"),
        ("pixels:1,3,8,8", "no input 'pixels' (inputs: 'image')"),
        ("image:1,3,8", "the input has rank 4, 3 dimensions given"),
    ],
)
def test_bad_input_shapes_get_one_line_errors_from_check_and_convert(
    model_file: Path, tmp_path: Path, shape: str, message: str
) -> None:
    for args in (("check",), ("convert", "-o", tmp_path / "out.onnx")):
        result = run_cli(args[0], model_file, *args[1:], "--input-shape", shape)
        assert result.returncode == 1
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_check_fails_exactly_where_convert_fails(tmp_path: Path) -> None:
    # Every op has a rule, but the rule for a training-mode BatchNormalization refuses it
    # while building: check used to say ok here and convert then failed.
    model = tiny_classifier()
    model.graph.node[1].CopyFrom(
        onnx.helper.make_node(
            "BatchNormalization", ["c1", "s", "b", "m", "v"], ["r1"], name="bn", training_mode=1
        )
    )
    for name, value in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
        model.graph.initializer.append(
            onnx.numpy_helper.from_array(np.full(4, value, np.float32), name)
        )
    path = tmp_path / "training.onnx"
    onnx.save(model, str(path))
    checked = run_cli("check", path, "--method", "vanilla")
    converted = run_cli("convert", path, "-o", tmp_path / "out.onnx", "--method", "vanilla")
    assert checked.returncode == converted.returncode == 1
    assert "training mode" in checked.stderr
    message = checked.stderr.removeprefix("onnxplain check: ")
    assert message == converted.stderr.removeprefix("onnxplain convert: ")


@pytest.mark.parametrize("method", ["all", "vanilla", "deconvnet", "guided"])
def test_check_names_what_it_built(model_file: Path, method: str) -> None:
    result = run_cli("check", model_file, "--method", method, "--target", "onnxruntime")
    assert result.returncode == 0, result.stderr
    expected = ", ".join(ALL_METHODS) if method == "all" else method
    assert f"({expected}, onnxruntime)" in result.stdout
    assert "Grad-CAM layer: 'r2'" in result.stdout  # before GlobalAveragePool


def test_check_gives_each_method_its_verdict_and_fails_only_for_the_method_asked(
    model_file: Path,
) -> None:
    """Issue 17: `check` exited 1 on every ViT (Grad-CAM's layer could not be read) although
    vanilla and guided convert. A layer that is not on the path fails the layer methods
    only: each gets its reason, and only a check that asks for one of them fails."""
    every = run_cli("check", model_file, "--layer", "nope")
    assert every.returncode == 0, every.stderr
    assert "gradcam: convert will fail: " in every.stdout
    assert "guided_gradcam: convert will fail: " in every.stdout
    assert "no tensor named 'nope' (given as the layer)" in every.stdout
    built = every.stdout.splitlines()[0]
    assert "vanilla" in built and "guided," in built and "gradcam" not in built
    asked = run_cli("check", model_file, "--layer", "nope", "--method", "gradcam")
    assert asked.returncode == 1
    assert "no tensor named 'nope'" in asked.stderr
    assert run_cli("check", model_file, "--layer", "nope", "--method", "guided").returncode == 0
