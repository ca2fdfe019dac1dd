"""The newer methods through the service, over a real loopback socket: each answer equals
its explain model run straight in onnxruntime with the same parameters; GetModel lists
every method with its parameters; sessions are built on first use only; bad parameters
are refused with INVALID_ARGUMENT and a message saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnxplain.client import Client, ServiceError
from onnxplain.graph_rewrite import GRAD_INPUT, build_explain_model, default_layer
from onnxplain.graph_rewrite.methods.smoothgrad import NOISE_INPUT, smoothgrad_noise
from onnxplain.server import Explainer, Service
from onnxplain.server.store.repository import SessionKey

from helpers.fd import session
from helpers.server_support import DEMO, SAMPLES, make_repository, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Explainer]]:
    with running_server(make_repository(tmp_path_factory.mktemp("models"))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: tuple[Service, Explainer]) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server[0].port}", timeout=60) as c:
        yield c


def batch() -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(SAMPLES.glob("*.npy"))])[:3]


def direct(
    method: str, x: np.ndarray, targets: np.ndarray, params: dict[str, Any], **extra: np.ndarray
) -> list[np.ndarray]:
    model = onnx.load(DEMO / "model.onnx")
    explain = build_explain_model(model, method, "input", "logits", params=params)
    names = ["saliency"] + (["completeness_gap"] if method == "integrated_gradients" else [])
    seed = np.eye(10, dtype=np.float32)[targets]
    return session(explain).run(names, {"input": x, GRAD_INPUT: seed, **extra})


def test_get_model_lists_every_method_its_parameters_and_the_default_layer(
    client: Client,
) -> None:
    digits = client.model("digits")
    assert set(digits.methods) == {
        "vanilla",
        "deconvnet",
        "guided",
        "gradcam",
        "guided_gradcam",
        "input_x_gradient",
        "smoothgrad",
        "integrated_gradients",
    }
    assert digits.methods["vanilla"] == {}
    assert digits.methods["integrated_gradients"]["steps"] == "50"
    assert digits.methods["smoothgrad"]["sigma"] == "0.15"
    assert {"samples", "seed", "noise"} <= set(digits.methods["smoothgrad"])
    assert "layer" in digits.methods["gradcam"]
    model = onnx.load(DEMO / "model.onnx")
    assert digits.default_layer == default_layer(model, "input", "logits") != ""


def test_sessions_are_built_on_first_use_only(
    client: Client, server: tuple[Service, Explainer]
) -> None:
    model = server[1].repository.get("digits")
    before = model.built()
    assert all(key.method != "input_x_gradient" for key in before)
    x = batch()
    client.explain("digits", x, method="input_x_gradient")
    client.explain("digits", x, method="input_x_gradient", targets=2)
    built = [key for key in model.built() if key not in before]
    assert built == [SessionKey("input_x_gradient")]


def test_smoothgrad_from_a_seed_equals_the_model_fed_that_noise(client: Client) -> None:
    x = batch()
    got = client.explain(
        "digits", x, method="smoothgrad", gradient="guided", samples=4, sigma=0.25, seed=9
    )
    assert got.seed == 9
    noise = smoothgrad_noise(x.shape, 4, seed=9)
    params = {"gradient": "guided", "sigma": float(np.float32(0.25))}
    (want,) = direct("smoothgrad", x, got.targets, params, **{NOISE_INPUT: noise})
    np.testing.assert_allclose(got.saliency, want, rtol=1e-5, atol=1e-6)
    # Given noise, no seed: the same map.
    fed = client.explain(
        "digits", x, method="smoothgrad", gradient="guided", sigma=0.25, noise=noise
    )
    assert fed.seed is None
    np.testing.assert_allclose(fed.saliency, got.saliency, rtol=1e-6, atol=1e-7)


def test_smoothgrad_without_a_seed_returns_the_one_it_drew(client: Client) -> None:
    x = batch()
    first = client.explain("digits", x, method="smoothgrad", samples=3)
    assert first.seed is not None
    again = client.explain("digits", x, method="smoothgrad", samples=3, seed=first.seed)
    np.testing.assert_array_equal(first.saliency, again.saliency)


@pytest.mark.parametrize(
    ("baseline", "graph_baseline"),
    [("zeros", "zeros"), (0.5, "constant:0.5"), (("blur", 1.0), "blur:1.0")],
)
def test_integrated_gradients_with_its_gap(
    client: Client, baseline: object, graph_baseline: str
) -> None:
    x = batch()
    got = client.explain(
        "digits",
        x,
        method="integrated_gradients",
        steps=8,
        integration="riemann_trapezoid",
        baseline=baseline,
    )
    params = {"steps": 8, "integration": "riemann_trapezoid", "baseline": graph_baseline}
    want, gap = direct("integrated_gradients", x, got.targets, params)
    np.testing.assert_allclose(got.saliency, want, rtol=1e-5, atol=1e-6)
    assert got.completeness_gap is not None
    np.testing.assert_allclose(got.completeness_gap, gap, rtol=1e-5, atol=1e-5)


def test_integrated_gradients_from_a_given_baseline(client: Client) -> None:
    x = batch()
    start = np.random.default_rng(1).standard_normal((1, *x.shape[1:])).astype(np.float32)
    got = client.explain("digits", x, method="integrated_gradients", steps=4, baseline=start)
    want, _ = direct(
        "integrated_gradients", x, got.targets, {"steps": 4, "baseline": "input"},
        ig_baseline=start,
    )  # fmt: skip
    np.testing.assert_allclose(got.saliency, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam"])
def test_gradcam_reports_its_layer_and_takes_another(client: Client, method: str) -> None:
    x = batch()
    got = client.explain("digits", x, method=method, cam_style="pytorch-grad-cam")
    assert got.layer == client.model("digits").default_layer
    (want,) = direct(method, x, got.targets, {"cam_style": "pytorch-grad-cam"})
    np.testing.assert_allclose(got.saliency, want, rtol=1e-5, atol=1e-6)
    model = onnx.load(DEMO / "model.onnx")
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu"]
    other = client.explain("digits", x, method=method, layer=relus[1])
    assert other.layer == relus[1]
    (want,) = direct(method, x, other.targets, {"layer": relus[1]})
    np.testing.assert_allclose(other.saliency, want, rtol=1e-5, atol=1e-6)


WRONG_SIZE = np.zeros((2, 1, 4, 4), np.float32)


@pytest.mark.parametrize(
    ("method", "options", "code", "message"),
    [
        ("guided", {"steps": 4}, "INVALID_ARGUMENT", "takes no 'steps'"),
        ("gradcam", {"sigma": 0.1}, "INVALID_ARGUMENT", "takes no 'sigma'"),
        ("gradcam", {"layer": "nope"}, "INVALID_ARGUMENT", "no tensor named 'nope'"),
        # Over the cap on copies of the input: refused as Triton refuses a batch over its
        # max_batch_size, naming the cap.
        ("integrated_gradients", {"steps": 5000}, "INVALID_ARGUMENT", "at most 1024"),
        ("smoothgrad", {"samples": 400}, "INVALID_ARGUMENT", "at most 1024"),
        ("smoothgrad", {"samples": 0}, "INVALID_ARGUMENT", "at least 1"),
        ("smoothgrad", {"noise": WRONG_SIZE}, "INVALID_ARGUMENT", "noise shape"),
        ("integrated_gradients", {"baseline": WRONG_SIZE}, "INVALID_ARGUMENT", "baseline shape"),
        ("integrated_gradients", {"baseline": "blur:-1"}, "INVALID_ARGUMENT", "blur"),
    ],
)  # fmt: skip
def test_bad_parameters_are_refused_with_the_reason(
    client: Client, method: str, options: dict[str, Any], code: str, message: str
) -> None:
    with pytest.raises(ServiceError) as raised:
        client.explain("digits", batch(), method=method, **options)
    assert raised.value.code == getattr(grpc.StatusCode, code)
    assert message in raised.value.details


def test_explain_cli_passes_the_options(server: tuple[Service, Explainer], tmp_path: Path) -> None:
    from test_cli_rewrite import run_cli

    x = tmp_path / "x.npy"
    np.save(x, batch()[:1])
    out = tmp_path / "sal.npy"
    result = run_cli(
        "explain", "--server", f"127.0.0.1:{server[0].port}", "--model", "digits",
        "--method", "integrated_gradients", "--steps", "6", "--baseline", "constant:0.2",
        x, "-o", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "completeness gap:" in result.stdout
    explained = int(result.stdout.split("class ")[1].split()[0])  # the digits' labels
    want, _ = direct(
        "integrated_gradients", batch()[:1], np.array([explained]),
        {"steps": 6, "baseline": "constant:0.2"},
    )  # fmt: skip
    np.testing.assert_allclose(np.load(out), want, rtol=1e-5, atol=1e-6)


def test_models_cli_lists_methods_and_the_default_layer(
    server: tuple[Service, Explainer], capsys: pytest.CaptureFixture[str]
) -> None:
    from onnxplain.cli import main

    assert main(["models", "--server", f"127.0.0.1:{server[0].port}"]) == 0
    out = capsys.readouterr().out
    assert "  integrated_gradients (gradient=vanilla, steps=50," in out
    assert "  vanilla\n" in out
    layer = default_layer(onnx.load(DEMO / "model.onnx"), "input", "logits")
    assert f"  Grad-CAM's default layer: {layer}" in out
