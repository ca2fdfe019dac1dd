"""The Python client and the CLI offer the targets beyond a class: a region (box, mask PNG or
mask array, some or all classes), a position, a detection, and the caller's own seed. Each
answer is float64 autograd's of the target's scalar on the PyTorch module; the CLI writes
what the client gets, and refuses a target it cannot read."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from onnxplain.client import Client, DetectionBox, Position, Region, ServiceError
from PIL import Image
from torch import nn

from onnxplain.cli import main

from helpers.oracle import float64_gradient
from helpers.server_support import running_server
from helpers.target_models import Recogniser, Segmenter, YoloV8Head, images, seeded, write_model

SEG, SEQ, DET = (2, 3, 16, 16), (2, 3, 16, 32), (1, 3, 32, 32)


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    return {
        "seg": seeded(Segmenter()),
        "ocr": seeded(Recogniser(), seed=1),
        "det": seeded(YoloV8Head(), seed=2, std=0.15),
    }


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory, nets: dict[str, nn.Module]) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("models")
    write_model(root / "seg", nets["seg"], torch.from_numpy(images(SEG)))
    write_model(root / "ocr", nets["ocr"], torch.from_numpy(images(SEQ)))
    detection = '[detection]\nlayout = "yolov8"\nmin_score = 0.3\n'
    write_model(root / "det", nets["det"], torch.from_numpy(images(DET)), detection)
    with running_server(root) as (service, _):
        yield f"127.0.0.1:{service.port}"


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[Client]:
    with Client(address, timeout=120) as c:
        yield c


def close(got: np.ndarray, ref: np.ndarray) -> None:
    assert np.abs(ref).max() > 0
    assert np.abs(got.astype(np.float64) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_region_box_mask_png_and_mask_array(client: Client, nets: dict[str, nn.Module]) -> None:
    x = images(SEG)
    mask = np.zeros((16, 16))
    mask[3:9, 2:10] = 1
    weights = torch.from_numpy(mask)
    ref = float64_gradient(nets["seg"], x, lambda out: (out[:, 1] * weights).flatten(1).sum(1))
    by_box = client.explain("seg", x, "vanilla", target=Region(box=(2, 3, 10, 9), classes=[1]))
    close(by_box.saliency, ref)
    buffer = io.BytesIO()
    Image.fromarray((mask * 255).astype(np.uint8)).save(buffer, format="PNG")
    by_png = client.explain("seg", x, "vanilla", target=Region(mask=buffer.getvalue(), classes=[1]))
    by_array = client.explain("seg", x, "vanilla", target=Region(mask=mask, classes=[1]))
    close(by_png.saliency, ref)
    close(by_array.saliency, ref)
    assert by_box.targets.tolist() == [1, 1]
    assert "class 1" in by_box.describe(0) and " p " not in by_box.describe(0)


def test_position_detection_and_a_given_seed(client: Client, nets: dict[str, nn.Module]) -> None:
    x = images(SEQ)
    got = client.explain("ocr", x, "vanilla", target=Position(2, class_index=4))
    close(got.saliency, float64_gradient(nets["ocr"], x, lambda out: out[:, 2, 4]))
    seed = np.random.default_rng(1).normal(size=(2, 8, 5)).astype(np.float32)
    given = client.explain("ocr", x, "vanilla", output_grad=seed)
    close(
        given.saliency,
        float64_gradient(
            nets["ocr"], x, lambda out: (out * torch.from_numpy(seed)).flatten(1).sum(1)
        ),
    )
    assert given.targets.tolist() == [-1, -1] and "seed" in given.describe(0)

    x = images(DET, seed=7)
    with torch.no_grad():
        out = nets["det"](torch.from_numpy(x))[0]
    best = int(out[4:].max(0).values.argmax())
    cx, cy, w, h = out[:4, best].tolist()
    box = (cx - w / 2 + 0.5, cy - h / 2, cx + w / 2 + 0.5, cy + h / 2)
    found = client.explain("det", x, "vanilla", target=DetectionBox(box))
    (detection,) = found.detections
    assert detection.index == best and detection.iou > 0.5
    label = detection.class_index
    close(found.saliency, float64_gradient(nets["det"], x, lambda o: o[:, 4 + label, best]))
    assert f"detection {best}" in found.describe(0)
    with pytest.raises(ServiceError, match="combines with no targets"):
        client.explain("det", x, target=DetectionBox(box), targets=[1])


def test_the_cli_writes_what_the_client_gets(address: str, client: Client, tmp_path: Path) -> None:
    x = images(SEG)
    np.save(tmp_path / "x.npy", x)
    mask = (np.random.default_rng(2).random((16, 16)) > 0.5).astype(np.float32)
    np.save(tmp_path / "mask.npy", mask)
    expected = client.explain("seg", x, "guided", target=Region(mask=mask)).saliency
    argv = ["explain", "--server", address, "--model", "seg", "--method", "guided"]
    out = tmp_path / "s.npy"
    assert (
        main(
            [
                *argv,
                "--explain",
                f"region:mask:{tmp_path / 'mask.npy'}",
                str(tmp_path / "x.npy"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.load(out), expected)
    assert (
        main(
            [*argv, "--explain", "region:box:2,3,10,9:0,2", str(tmp_path / "x.npy"), "-o", str(out)]
        )
        == 0
    )
    boxed = client.explain("seg", x, "guided", target=Region(box=(2, 3, 10, 9), classes=[0, 2]))
    np.testing.assert_array_equal(np.load(out), boxed.saliency)
    np.save(tmp_path / "seed.npy", np.ones((2, 3, 16, 16), np.float32))
    assert (
        main(
            [
                *argv,
                "--output-grad",
                str(tmp_path / "seed.npy"),
                str(tmp_path / "x.npy"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    everything = client.explain("seg", x, "guided", target=Region(box=(0, 0, 16, 16)))
    np.testing.assert_allclose(np.load(out), everything.saliency, rtol=1e-5, atol=1e-7)


def test_the_cli_refuses_a_target_it_cannot_read(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "explain",
                "--server",
                address,
                "--model",
                "seg",
                "--explain",
                "region:circle:1",
                "x.npy",
                "-o",
                "s.npy",
            ]
        )
    assert "cannot read the target 'region:circle:1'" in capsys.readouterr().err
