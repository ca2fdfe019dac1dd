"""Heatmaps, top-k and class names through the service, over a real loopback gRPC socket.

Oracles: the demo model's explain model run straight in onnxruntime (`direct_explain`),
scipy's softmax for the probabilities, Pillow for the grayscale of the sent image, and the
renderer (tested on its own against Captum and matplotlib in test_render.py) for the
expected pixels of each heatmap.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator

import grpc
import matplotlib
import numpy as np
import pytest
from onnxplain.client import Client, ServiceError
from onnxplain.render import HeatmapOptions, render_heatmap, tensor_image, to_2d
from onnxplain.server.core.imaging import preprocess
from onnxplain.server.store.config import load_config
from PIL import Image
from scipy.special import softmax

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_tensor

from helpers.server_support import DEMO, SAMPLES, direct_explain, make_repository, running_server


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = make_repository(tmp_path_factory.mktemp("models"))
    # The demo model without its config.toml: tensors only, no preprocessing, no labels.
    (root / "plain").mkdir()
    shutil.copy(DEMO / "model.onnx", root / "plain" / "model.onnx")
    with running_server(root, max_batch=8) as (service, _):
        yield f"127.0.0.1:{service.port}"


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[Client]:
    with Client(address) as c:
        yield c


@pytest.fixture(scope="module")
def stub(address: str) -> Iterator[explain_pb2_grpc.ExplainServiceStub]:
    """The generated stub, for requests the Python client would refuse before sending."""
    with grpc.insecure_channel(address) as channel:
        yield explain_pb2_grpc.ExplainServiceStub(channel)


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def sent_image(size: tuple[int, int]) -> tuple[Image.Image, bytes]:
    """The 8x8 digit, enlarged to a non-square size: what a user's photo would be."""
    image = Image.open(SAMPLES / "digit3.png").convert("RGB").resize(size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return image, buffer.getvalue()


def test_image_request_heatmap_has_the_original_size_and_overlays_it(client: Client) -> None:
    image, data = sent_image((200, 120))
    options = HeatmapOptions(sign="all", opacity=0.4, colormap="coolwarm", percentile=95)
    got = client.explain("digits", data, "guided", targets=8, heatmap=options)
    assert got.heatmap_png is not None and len(got.heatmaps_png) == 1
    heat = png(got.heatmap_png)
    assert heat.shape == (120, 200, 3)  # the sent image's size, not the model's 8x8
    # The tensor the server made of the enlarged image (its own resize is tested elsewhere).
    x = preprocess(data, load_config(DEMO).preprocessing)  # type: ignore[arg-type]
    expected_map = direct_explain("guided", x, np.array([8]))[0]
    np.testing.assert_allclose(got.saliency, expected_map, rtol=1e-4, atol=1e-6)
    expected = render_heatmap(to_2d(expected_map[0]), options, image)
    assert np.abs(heat - np.asarray(expected, np.float64)).max() <= 2
    # Opacity 0 leaves exactly the sent image, in gray: the map really is over that image.
    bare = client.explain("digits", data, targets=8, heatmap=HeatmapOptions(opacity=0.0))
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    np.testing.assert_allclose(png(bare.heatmaps_png[0])[..., 0], gray, atol=1)


def test_a_batch_gets_one_heatmap_per_sample_over_its_own_tensor(client: Client) -> None:
    x = np.concatenate([np.load(SAMPLES / f"digit{d}.npy") for d in (3, 7)])
    options = HeatmapOptions(sign="positive")
    got = client.explain("digits", x, "vanilla", targets=[3, 7], heatmap=options)
    assert len(got.heatmaps_png) == 2 and got.heatmap_png == got.heatmaps_png[0]
    saliency = direct_explain("vanilla", x, np.array([3, 7]))[0]
    for row in range(2):
        under = tensor_image(x[row], (0.3,), (0.4,))  # the demo's config.toml mean and std
        expected = np.asarray(render_heatmap(to_2d(saliency[row]), options, under), np.float64)
        assert np.abs(png(got.heatmaps_png[row]) - expected).max() <= 2
    assert not np.array_equal(got.heatmaps_png[0], got.heatmaps_png[1])


def test_top_k_explains_each_samples_best_classes_in_one_call(client: Client) -> None:
    x = np.concatenate([np.load(SAMPLES / f"digit{d}.npy") for d in (0, 5)])
    got = client.explain("digits", x, "guided", top_k=3, heatmap=True)
    _, scores, _ = direct_explain("guided", x)
    best = np.argsort(-scores, axis=1)[:, :3]
    np.testing.assert_array_equal(got.samples, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(got.targets, best.reshape(-1))
    np.testing.assert_array_equal(got.labels, [str(t) for t in best.reshape(-1)])
    expected = direct_explain("guided", x[got.samples], got.targets)[0]
    np.testing.assert_allclose(got.saliency, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.target_scores, scores[got.samples, got.targets], rtol=1e-5)
    p = softmax(scores.astype(np.float64), axis=1)[got.samples, got.targets]
    np.testing.assert_allclose(got.probabilities, p, rtol=1e-4, atol=1e-7)
    assert got.scores.shape == (2, 10) and len(got.heatmaps_png) == 6


def test_targets_by_class_name(client: Client) -> None:
    x = np.concatenate([np.load(SAMPLES / f"digit{d}.npy") for d in (3, 7)])
    by_name = client.explain("digits", x, "guided", targets=["3", "7"])
    by_index = client.explain("digits", x, "guided", targets=[3, 7])
    np.testing.assert_array_equal(by_name.targets, [3, 7])
    np.testing.assert_array_equal(by_name.saliency, by_index.saliency)


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"targets": ["cat"]}, grpc.StatusCode.INVALID_ARGUMENT, "no class named 'cat'"),
        ({"top_k": 2, "targets": 1}, grpc.StatusCode.INVALID_ARGUMENT, "not both"),
        ({"top_k": 11}, grpc.StatusCode.INVALID_ARGUMENT, "top_k is 11"),
        ({"top_k": 5, "batch": 2}, grpc.StatusCode.RESOURCE_EXHAUSTED, "10 rows"),
        ({"opacity": 2.0}, grpc.StatusCode.INVALID_ARGUMENT, "opacity"),
        ({"colormap": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "colormap"),
        ({"percentile": 0.0}, grpc.StatusCode.INVALID_ARGUMENT, "percentile"),
        ({"sign": 9}, grpc.StatusCode.INVALID_ARGUMENT, "heatmap_sign 9"),
    ],
)
def test_bad_target_and_heatmap_requests_are_refused_with_the_reason(
    client: Client,
    stub: explain_pb2_grpc.ExplainServiceStub,
    kwargs: dict,
    code: grpc.StatusCode,
    message: str,
) -> None:
    x = np.concatenate([np.load(SAMPLES / "digit3.npy")] * kwargs.pop("batch", 1))
    request = pb.ExplainRequest(model="digits", tensor=to_tensor(x), heatmap=True)
    if isinstance(kwargs.get("targets"), list):
        request.target_names.extend(kwargs["targets"])
    elif "targets" in kwargs:
        request.targets.append(kwargs["targets"])
    request.top_k = kwargs.get("top_k", 0)
    for field in ("opacity", "colormap", "percentile", "sign"):
        if field in kwargs:
            setattr(request, f"heatmap_{field}", kwargs[field])
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request, timeout=30)
    assert caught.value.code() == code and message in caught.value.details()
    # ... and the server still answers the next good request.
    assert client.explain("digits", x[:1]).targets.shape == (1,)


def test_model_summary_carries_the_preprocessing_to_undo(client: Client) -> None:
    digits = client.model("digits")
    assert digits.layout == "NCHW"
    np.testing.assert_allclose([digits.mean, digits.std], [(0.3,), (0.4,)], rtol=1e-6)


def test_client_side_heatmap_overlays_the_image_that_was_sent(client: Client) -> None:
    _, data = sent_image((64, 40))
    got = client.explain("digits", data, heatmap=True)
    assert got.heatmap(0).size == (64, 40)
    np.testing.assert_allclose(png(got.heatmap_png or b""), np.asarray(got.heatmap(0)), atol=2)


def test_a_model_without_preprocessing_gets_the_map_alone_at_the_tensor_size(
    client: Client,
) -> None:
    x = np.load(SAMPLES / "digit7.npy")
    got = client.explain("plain", x, "deconvnet", heatmap=HeatmapOptions(sign="absolute"))
    heat = png(got.heatmap_png or b"")
    assert heat.shape == (8, 8, 3)
    magnitude = np.abs(direct_explain("deconvnet", x)[0][0, 0]).astype(np.float64)
    cmap = matplotlib.colormaps["viridis"]
    expected = np.asarray(cmap(magnitude / magnitude.max()))[..., :3] * 255
    assert np.abs(heat - expected).max() <= 3  # colours straight from matplotlib, no image
    assert got.labels == [] and "(" not in got.describe(0)  # no label to show
    with pytest.raises(ServiceError, match="has no labels"):
        client.explain("plain", x, targets=["7"])
