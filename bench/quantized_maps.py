"""How far int8 quantization moves the maps: an int8 model (onnxruntime's quantize_static,
QDQ format, calibrated on 8 random batches) against its float model, both explained by
onnxplain, per method: the Pearson correlation and relative L2 of the maps over 16 images.

    python bench/quantized_maps.py [--images 16]

The model is the tests' tiny classifier (tests/helpers/tiny.py: Conv/Relu, strided
Conv/Relu, GlobalAveragePool, Gemm), random weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from onnxplain.graph_rewrite import build_explain_model

from helpers.tiny import tiny_classifier

METHODS = ("vanilla", "guided", "deconvnet", "gradcam", "input_x_gradient")


class _Calibration(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter([rng.standard_normal((2, 3, 8, 8)).astype(np.float32)] * 8)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}


def _maps(model: onnx.ModelProto, method: str, images: np.ndarray) -> np.ndarray:
    explain = build_explain_model(model, method, output_name="logits")
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])
    seed = np.zeros((2, 5), np.float32)
    seed[:, 2] = 1
    pairs = (images[i : i + 2] for i in range(0, len(images), 2))
    return np.concatenate(
        [session.run(["saliency"], {"image": p, "output_grad": seed})[0] for p in pairs]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="an even number")
    args = parser.parse_args()
    float_model = tiny_classifier(batch=2)
    with tempfile.TemporaryDirectory() as folder:
        onnx.save(float_model, f"{folder}/float.onnx")
        quantize_static(
            f"{folder}/float.onnx",
            f"{folder}/int8.onnx",
            _Calibration(),
            quant_format=QuantFormat.QDQ,
        )
        int8_model = onnx.load(f"{folder}/int8.onnx")
    images = np.random.default_rng(1).standard_normal((args.images, 3, 8, 8)).astype(np.float32)
    print(f"{'method':<18}{'pearson r':>10}{'rel L2':>9}")
    for method in METHODS:
        a, b = _maps(float_model, method, images), _maps(int8_model, method, images)
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        l2 = np.linalg.norm(b - a) / np.linalg.norm(a)
        print(f"{method:<18}{r:>10.3f}{l2:>9.3f}")


if __name__ == "__main__":
    main()
