"""The measurements behind model_coverage.py's rows: one timm model, its exports and their
variants, and the oracles (float64 torch autograd, Captum) computed once per model."""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.abc
import importlib.machinery
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import timing
import torch
from engines import load
from onnxplain.graph_rewrite import (
    ALL_METHODS,
    GRAD_INPUT,
    REGISTRY,
    SALIENCY_OUTPUT,
    RecipeOptions,
    build_explain_model,
)
from onnxplain.graph_rewrite.recipe import check_each, default_layer

INPUT, OUTPUT = "x", "logits"
CONVERTED = ("vanilla", "guided", "gradcam")


class _Absent(type):
    """What the torchvision stub hands out: a class (timm tests isinstance against some,
    e.g. FrozenBatchNorm2d) whose attributes are their own names (InterpolationMode.X)
    and that cannot be instantiated."""

    def __getattr__(cls, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return name

    def __call__(cls, *_: Any, **__: Any) -> Any:
        raise NotImplementedError(f"torchvision is a stub here: {cls.__name__}")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # what the import machinery probes for: absent
            raise AttributeError(name)
        return _Absent(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes every torchvision submodule a stub but torchvision.models, whose absence
    timm expects (its feature-extraction import is guarded by `except ImportError`)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "torchvision" and not fullname.startswith("torchvision."):
            return None
        if fullname.startswith("torchvision.models"):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _stub_torchvision() -> None:
    # timm imports torchvision for data transforms and a frozen BatchNorm class, never
    # for the models built here; PyPI's torchvision pins another (CUDA) torch.
    if "torchvision" in sys.modules or any(isinstance(f, _StubFinder) for f in sys.meta_path):
        return
    try:
        import torchvision  # noqa: F401  (the real one, where installed)
    except ImportError:
        sys.meta_path.insert(0, _StubFinder())


def rel_l2(ours: np.ndarray, oracle: np.ndarray) -> float:
    ours = np.asarray(ours, dtype=np.float64).reshape(oracle.shape)
    return float(np.linalg.norm(ours - oracle) / max(np.linalg.norm(oracle), 1e-300))


@dataclass
class Subject:
    """A timm model with random seeded weights, one input, its class, and the oracles."""

    name: str
    size: int
    net: torch.nn.Module
    x: np.ndarray
    cls: int = 0
    oracles: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, size: int) -> Subject:
        _stub_torchvision()
        import timm

        torch.manual_seed(0)
        kwargs: dict[str, Any] = {"img_size": size} if name.startswith("vit_") else {}
        net = timm.create_model(name, pretrained=False, **kwargs).eval()
        for module in net.modules():
            # Captum's hooks refuse in-place activations; in place or not, the maths agree.
            if getattr(module, "inplace", False) is True:
                module.inplace = False
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        subject = cls(name, size, net, x)
        subject._oracles()
        return subject

    def _oracles(self) -> None:
        from captum.attr import GuidedBackprop

        net64 = copy.deepcopy(self.net).double()
        x64 = torch.from_numpy(self.x.astype(np.float64))
        with torch.no_grad():
            self.cls = int(net64(x64).argmax())
        for tag, net, x in (("64", net64, x64), ("32", self.net, torch.from_numpy(self.x))):
            x = x.clone().requires_grad_(True)
            net(x)[0, self.cls].backward()
            self.oracles["vanilla" + tag] = x.grad.double().numpy()
            attr = GuidedBackprop(net).attribute(x.detach(), target=self.cls)
            self.oracles["guided" + tag] = attr.detach().double().numpy()
        del net64

    def export(self, exporter: str) -> onnx.ModelProto:
        x = torch.from_numpy(np.repeat(self.x, 2, axis=0))  # batch 2: no 0/1 specialisation
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            if exporter == "torchscript":
                torch.onnx.export(
                    self.net,
                    (x,),
                    str(path),
                    dynamo=False,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                    opset_version=17,
                )
            else:
                batch = torch.export.Dim("batch", min=1, max=64)
                # The dynamo exporter reports progress on stdout, which holds the table.
                with contextlib.redirect_stdout(sys.stderr):
                    torch.onnx.export(
                        self.net,
                        (x,),
                        str(path),
                        dynamo=True,
                        input_names=[INPUT],
                        output_names=[OUTPUT],
                        dynamic_shapes={"x": {0: batch}},
                    )
            return onnx.load(str(path))


def variant_of(model: onnx.ModelProto, variant: str, subject: Subject) -> onnx.ModelProto:
    if variant == "fp32":
        return model
    if variant == "fp16":
        from onnxconverter_common import float16

        return float16.convert_float_to_float16(model, keep_io_types=True)
    if variant == "onnxsim":
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError("onnxsim could not validate the simplified model")
        return simplified
    if variant == "int8":
        return _quantized(model, subject)
    raise ValueError(variant)


def _quantized(model: onnx.ModelProto, subject: Subject) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(1)
    shape = subject.x.shape

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [subject.x, *(rng.standard_normal(shape).astype(np.float32) for _ in "abc")]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return {INPUT: self.left.pop()} if self.left else None

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, str(src))
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            # The classifier stays float: calibrated on float activations, its output range
            # ends at the top logit, which the quantized layers before it push past, so the
            # predicted class saturates and its straight-through gradient is exactly 0.
            nodes_to_exclude=[n.name for n in model.graph.node if OUTPUT in n.output],
        )
        return onnx.load(str(dst))


def _verdict(model: onnx.ModelProto, options: RecipeOptions, layer: str | None) -> str:
    takes_layer = {n for n, s in REGISTRY.items() if any(p.name == "layer" for p in s.params)}
    methods = tuple(m for m in ALL_METHODS if layer is not None or m not in takes_layer)
    params = {m: {"layer": layer} for m in methods if m in takes_layer}
    _, verdicts = check_each(model, methods, params, options)
    failed = [m for m, error in verdicts.items() if error is not None]
    text = f"{len(methods) - len(failed)}/{len(ALL_METHODS)} ok"
    return text + (f" (fail: {', '.join(failed)})" if failed else "")


def measure(
    subject: Subject,
    exported: onnx.ModelProto,
    variant: str,
    args: argparse.Namespace,
    first_line: Callable[[BaseException], str],
) -> dict[str, str]:
    """The cells of one row after the first three."""
    cells: dict[str, str] = {}
    try:
        model = variant_of(exported, variant, subject)
    except Exception as exc:
        return {"check": "variant: " + first_line(exc)}
    options = RecipeOptions(input_name=INPUT, output_name=OUTPUT)
    layer = None
    try:
        layer = default_layer(model, options)
        cells["check"] = _verdict(model, options, layer)
    except Exception as exc:
        cells["check"] = first_line(exc)
    built: dict[str, onnx.ModelProto] = {}
    for method in CONVERTED:
        try:
            params = {"layer": layer} if method == "gradcam" and layer else None
            built[method] = build_explain_model(
                model, method, input_name=INPUT, output_name=OUTPUT, params=params
            )
            cells[method] = "ok"
        except Exception as exc:
            cells[method] = first_line(exc)
    seed = np.zeros((1, 1000), np.float32)
    seed[0, subject.cls] = 1.0
    feeds = {INPUT: subject.x, GRAD_INPUT: seed}
    saliency: dict[str, np.ndarray] = {}
    for method in ("vanilla", "guided"):
        if method not in built:
            continue
        key = method + " err (ctl)"
        try:
            ort = load("onnxruntime", built[method], feeds, threads=args.threads)
            saliency[method] = ort.output(SALIENCY_OUTPUT)
            ours = rel_l2(saliency[method], subject.oracles[method + "64"])
            ctl = rel_l2(subject.oracles[method + "32"], subject.oracles[method + "64"])
            cells[key] = f"{ours:.1e} ({ctl:.1e})"
            if method == "vanilla":
                # Its own cell: a variant onnxruntime cannot run as a forward model
                # (onnxconverter-common's float16 ViT) still has its map's error above.
                try:
                    cells["explain/forward"] = _ratio(model, ort, subject, args)
                except Exception as exc:
                    cells["explain/forward"] = "forward: " + first_line(exc)
            del ort
        except Exception as exc:
            cells[key] = first_line(exc)
    if "vanilla" in saliency:
        try:
            ov = load("openvino", built["vanilla"], feeds, threads=args.threads)
            cells["ov-ort"] = f"{rel_l2(ov.output(SALIENCY_OUTPUT), saliency['vanilla']):.1e}"
            del ov
        except Exception as exc:
            cells["ov-ort"] = first_line(exc)
    return cells


def _ratio(model: onnx.ModelProto, explain: Any, subject: Subject, args: argparse.Namespace) -> str:
    forward = load("onnxruntime", model, {INPUT: subject.x}, threads=args.threads)
    paired = timing.in_alternation(
        forward.run, explain.run, warmup=1, most=args.pairs, budget_s=10.0, least=3
    )
    return paired.ratio_text()
