"""Guided backprop and deconvnet on timm's MobileNetV3s against Captum, under each
`rectifiers` choice: the relative L2 distance of onnxplain's map from Captum's
GuidedBackprop / Deconvolution (which hook nn.ReLU only), random weights, 2 images 96x96.

    pip install --no-deps timm==1.0.31 safetensors huggingface_hub   # not in the test extra
    python bench/rectifier_default.py

timm imports torchvision, which is not installed (its wheel pins another torch): a stub
module stands in for it; nothing here reaches it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class _StubMeta(type):
    def __getattr__(cls, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"  # enum members timm reads at import (InterpolationMode)


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubMeta(name, (), {"__init__": lambda self, *a, **k: None})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def main() -> None:
    sys.meta_path.insert(0, _TorchvisionStub())
    try:
        import timm
    except ImportError:
        sys.exit("bench/rectifier_default.py needs timm: see its docstring")
    from captum.attr import Deconvolution, GuidedBackprop
    from onnxplain.graph_rewrite import build_explain_model

    from helpers.fd import session
    from helpers.nets import export_onnx

    image = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = [2, 5]
    seed = np.eye(10, dtype=np.float32)[targets]
    print(f"{'model':<24}{'method':<11}{'rectifiers':<12}{'rel L2 vs Captum':>17}")
    for name in ("mobilenetv3_small_100", "mobilenetv3_large_100"):
        torch.manual_seed(0)
        net = timm.create_model(name, pretrained=False, num_classes=10).eval()
        model = export_onnx(net, image)
        for method, explainer in (("guided", GuidedBackprop), ("deconvnet", Deconvolution)):
            x = image.clone().requires_grad_(True)
            want = explainer(net).attribute(x, target=torch.tensor(targets)).detach().numpy()
            for rectifiers in ("relu", "all"):
                explain = build_explain_model(model, method, rectifiers=rectifiers)
                feeds = {"image": image.numpy(), "output_grad": seed}
                got = session(explain).run(["saliency"], feeds)[0]
                l2 = np.linalg.norm(got - want) / np.linalg.norm(want)
                print(f"{name:<24}{method:<11}{rectifiers:<12}{l2:>17.3g}")


if __name__ == "__main__":
    main()
