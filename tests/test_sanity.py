"""`onnxplain sanity`: the cascade, the measures, the verdict and exit status, the stored
report, and the report in ModelInfo over a real gRPC socket.

The numbers themselves are checked against Quantus in test_sanity_quantus.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxplain.client import Client
from onnxplain.sanity import cascade, parameter_layers, read_report, run_sanity, similarities
from onnxplain.server.core.imaging import preprocess
from onnxplain.server.store.config import load_config
from scipy.stats import spearmanr

from onnxplain.cli import main
from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc

from helpers.server_support import DEMO, running_server


def served_model_info(root: Path, name: str) -> pb.ModelInfo:
    """GetModel from a server on `root`, over a real loopback socket."""
    with (
        running_server(root) as (service, _),
        grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        return stub.GetModel(pb.GetModelRequest(name=name), timeout=30).model


def test_layers_run_from_the_logits_down_and_each_step_adds_one() -> None:
    model = onnx.load(DEMO / "model.onnx")
    layers = parameter_layers(model)
    # The digits All-CNN: five convs, exported as /0, /2, /4, /6, /8 (ReLUs in between).
    assert [layer.name for layer in layers] == [f"/{i}/Conv" for i in (8, 6, 4, 2, 0)]
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for depth, (_, randomised) in enumerate(cascade(model, lambda n, v, f: v + 1.0), start=1):
        now = {t.name: numpy_helper.to_array(t) for t in randomised.graph.initializer}
        changed = {name for name in original if not np.array_equal(now[name], original[name])}
        assert changed == {i for layer in layers[:depth] for i in layer.initializers}


def test_measures_are_one_for_the_same_map_and_follow_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 16, 16))
    same = similarities(a, a)
    assert same == pytest.approx(dict.fromkeys(same, 1.0))
    b = a + rng.normal(size=a.shape) * 2.0
    got = similarities(a, b)
    assert got["spearman"] == pytest.approx(spearmanr(a.sum(0).ravel(), b.sum(0).ravel())[0])
    assert got["spearman_abs"] == pytest.approx(
        spearmanr(np.abs(a).sum(0).ravel(), np.abs(b).sum(0).ravel())[0]
    )
    unrelated = similarities(a, rng.normal(size=a.shape))
    assert all(abs(v) < 0.3 for v in unrelated.values()), unrelated


def test_threshold_sets_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(DEMO / "samples" / "digit3.npy")
    common = ["sanity", str(DEMO), "--method", "vanilla", "--input", sample]
    assert main([*common, "--max-similarity", "0.99"]) == 0
    assert main([*common, "--max-similarity", "-1"]) == 1
    out = capsys.readouterr().out
    assert "| vanilla |" in out and "FAIL (spearman_abs > -1)" in out


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sanity", str(tmp_path / "nothing")]) == 2
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["sanity", str(DEMO), "--input", str(text)]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "give .npy, .png or .jpg" in err


def test_written_report_reaches_model_info(tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(DEMO, folder)
    png = tmp_path / "sanity-plot.png"
    samples = [str(DEMO / "samples" / f"digit{d}.png") for d in (3, 7)]
    inputs = [arg for sample in samples for arg in ("--input", sample)]
    methods = ["--method", "vanilla", "--method", "guided"]
    status = main(["sanity", str(folder), *methods, *inputs, "--write", "--plot", str(png)])
    report = read_report(folder)
    assert report is not None and status == (0 if report.passed else 1)
    assert (folder / "sanity.png").stat().st_size > 10_000 and png.exists()
    assert [m.method for m in report.methods] == ["vanilla", "guided"]
    assert report.inputs == 2

    info = served_model_info(tmp_path, "digits")
    assert info.sanity_metric == "spearman_abs"
    assert info.sanity_max_similarity == pytest.approx(0.5)
    by_method = {pb.Method.Name(r.method): r for r in info.sanity}
    assert set(by_method) == {"METHOD_VANILLA", "METHOD_GUIDED"}
    guided = next(m for m in report.methods if m.method == "guided")
    assert by_method["METHOD_GUIDED"].passed == guided.passed
    assert by_method["METHOD_GUIDED"].ssim == pytest.approx(
        np.mean([s.similarity["ssim"] for s in guided.steps])
    )
    assert info.sanity_score == "mean"
    with running_server(tmp_path) as (service, _), Client(f"127.0.0.1:{service.port}") as client:
        summary = next(m for m in client.models() if m.name == "digits")
    assert dict(summary.sanity) == {m.method: m.passed for m in report.methods}


def test_damaged_report_leaves_the_model_serving(tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "digits")
    (tmp_path / "digits" / "sanity.json").write_text("{not json")
    info = served_model_info(tmp_path, "digits")
    assert info.available and len(info.sanity) == 0


def test_demo_model_reproduces_the_papers_finding() -> None:
    """Adebayo et al.: guided backprop's maps stay close to the original's while the layers
    are randomised from the top; the gradient's do not. On the trained shapes demo."""
    folder = DEMO.parent / "shapes"
    pre = load_config(folder).preprocessing
    assert pre is not None
    x = np.concatenate(
        [preprocess(p.read_bytes(), pre) for p in sorted(folder.glob("samples/*.png"))]
    )
    report = run_sanity(onnx.load(folder / "model.onnx"), x, ["vanilla", "guided"])
    vanilla, guided = report.methods
    top_half = len(guided.steps) // 2
    for step in guided.steps[:top_half]:
        assert step.similarity["spearman_abs"] > 0.55, step
    assert vanilla.steps[1].similarity["spearman_abs"] < 0.4
    assert guided.passed is False and vanilla.passed is True
