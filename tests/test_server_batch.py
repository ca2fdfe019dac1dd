"""A model stored with batch dimension -1 (as Paddle exports it) is served at any batch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnxplain.client import Client

from helpers.server_support import DEMO, SAMPLES, direct_explain, running_server


def _stored_with_batch_minus_one(root: Path) -> Path:
    folder = root / "paddle_style"
    shutil.copytree(DEMO, folder)
    model = onnx.load(str(folder / "model.onnx"))
    del model.graph.value_info[:]
    for vi in (*model.graph.input, *model.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = -1
    onnx.save(model, str(folder / "model.onnx"))
    return root


def test_batch_minus_one_is_served_for_batch_one_and_two(tmp_path: Path) -> None:
    x = np.concatenate([np.load(p) for p in sorted(SAMPLES.glob("*.npy"))])[:2]
    with (
        running_server(_stored_with_batch_minus_one(tmp_path)) as (service, _),
        Client(f"127.0.0.1:{service.port}", timeout=30) as client,
    ):
        info = client.model("paddle_style")
        assert info.available, info.error
        assert info.input_shape == (-1, 1, 8, 8) and info.output_shape == (-1, 10)
        for n in (1, 2):
            got = client.explain("paddle_style", x[:n], method="guided")
            saliency, scores, targets = direct_explain("guided", x[:n])
            np.testing.assert_array_equal(got.targets, targets)
            np.testing.assert_allclose(got.scores, scores, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got.saliency, saliency, rtol=1e-5, atol=1e-6)
