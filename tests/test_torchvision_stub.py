"""The torchvision stand-in serves onnx2torch and pytorch-grad-cam in either order.

Two stubs used to shadow each other: once pytorch-grad-cam's stub had made `torchvision`,
onnx2torch's import of `torchvision.ops` failed, so test_fold's onnx2torch oracle failed
only when a pytorch-grad-cam test ran first in the same process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
IMPORT_GRAD_CAM = "from helpers.pytorch_grad_cam_import import pytorch_grad_cam; pytorch_grad_cam()"
IMPORT_ONNX2TORCH = (
    "from helpers.oracle import _stub_torchvision; _stub_torchvision(); import onnx2torch"
)


@pytest.mark.parametrize(
    "first, second",
    [(IMPORT_GRAD_CAM, IMPORT_ONNX2TORCH), (IMPORT_ONNX2TORCH, IMPORT_GRAD_CAM)],
    ids=["grad-cam-first", "onnx2torch-first"],
)
def test_both_packages_import_in_either_order(first: str, second: str) -> None:
    code = f"{first}\n{second}\nimport torchvision.ops, torchvision.transforms.functional"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_stubbed_name_fails_loudly() -> None:
    from helpers.torchvision_stub import torchvision_module

    with pytest.raises(NotImplementedError, match="stub"):
        torchvision_module("ops", "nms").nms()
