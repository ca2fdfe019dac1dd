"""Shape arithmetic folded at convert time with the batch left free (issue 17, item 3).

Hand-made graphs, each the pattern an exporter writes, with a symbolic batch:
- computed pads (HF Swin's `maybe_pad`, timm's `pad_same`): Pad's pads from
  Shape → Gather → (window - size % window) % window → Concat;
- `torch.roll` as TorchScript exports it: two Slices at Shape[d] - shift, concatenated;
- `as_strided` as a Gather at Range(0, Shape[1], step) over the flattened input;
- timm's pad_same in float with QuantizeLinear → DequantizeLinear pairs on its constants
  and result, as quantize_static leaves it (MaxViT int8).
Each map is checked against torch autograd of the same function, at two batch sizes
through one explain model, and the arithmetic that reads the batch stays computed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import session

INT_MAX = 2**63 - 1
SHAPE = ["batch", 3, 5, 7]
WINDOW = 4
SHIFT = 2


def _model(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "shapes",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def computed_pads() -> onnx.ModelProto:
    """Pad to a multiple of WINDOW on H and W, then Relu (so the map is not all ones)."""
    nodes = [helper.make_node("Shape", ["image"], ["dims"])]
    pads = []
    for axis in (2, 3):
        nodes += [
            helper.make_node("Gather", ["dims", f"ax{axis}"], [f"size{axis}"], axis=0),
            helper.make_node("Mod", [f"size{axis}", "window"], [f"rem{axis}"]),
            helper.make_node("Sub", ["window", f"rem{axis}"], [f"gap{axis}"]),
            helper.make_node("Mod", [f"gap{axis}", "window"], [f"pad{axis}"]),
        ]
        pads.append(f"pad{axis}")
    nodes += [
        helper.make_node("Concat", ["zeros6", *pads], ["pads"], axis=0),
        helper.make_node("Pad", ["image", "pads"], ["padded"]),
        helper.make_node("Mul", ["padded", "w"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["out"]),
    ]
    w = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    consts = {"ax2": _i64(2), "ax3": _i64(3), "window": _i64(WINDOW), "zeros6": _i64(*[0] * 6)}
    return _model(nodes, {**consts, "w": w})


def torch_pads(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    padded = F.pad(x, (0, (WINDOW - w % WINDOW) % WINDOW, 0, (WINDOW - h % WINDOW) % WINDOW))
    weight = torch.from_numpy(numpy_helper.to_array(computed_pads().graph.initializer[-1]))
    return F.relu(padded * weight)


def rolled() -> onnx.ModelProto:
    """torch.roll(x, SHIFT, dims=3) as two Slices at W - SHIFT, then Concat, then Mul."""
    nodes = [
        helper.make_node("Shape", ["image"], ["dims"]),
        helper.make_node("Gather", ["dims", "ax3"], ["width"], axis=0),
        helper.make_node("Sub", ["width", "shift"], ["cut"]),
        helper.make_node("Slice", ["image", "cut", "end", "ax3"], ["tail"]),
        helper.make_node("Slice", ["image", "zero", "cut", "ax3"], ["head"]),
        helper.make_node("Concat", ["tail", "head"], ["rolled"], axis=3),
        helper.make_node("Mul", ["rolled", "w"], ["out"]),
    ]
    w = np.random.default_rng(1).standard_normal((1, 3, 5, 7)).astype(np.float32)
    consts = {"ax3": _i64(3), "shift": _i64(SHIFT), "end": _i64(INT_MAX), "zero": _i64(0)}
    return _model(nodes, {**consts, "w": w})


def torch_roll(x: torch.Tensor) -> torch.Tensor:
    weight = torch.from_numpy(numpy_helper.to_array(rolled().graph.initializer[-1]))
    return torch.roll(x, SHIFT, dims=3) * weight


def strided() -> onnx.ModelProto:
    """Every other element of each flattened sample: Gather at Range(0, C·H·W, 2), squared."""
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Shape", ["flat"], ["dims"]),
        helper.make_node("Gather", ["dims", "one"], ["length"], axis=0),
        helper.make_node("Range", ["zero", "length", "two"], ["indices"]),
        helper.make_node("Gather", ["flat", "indices"], ["picked"], axis=1),
        helper.make_node("Mul", ["picked", "picked"], ["out"]),
    ]
    return _model(nodes, {"one": np.array(1, np.int64), "zero": np.array(0, np.int64),
                          "two": np.array(2, np.int64)})  # fmt: skip


def torch_strided(x: torch.Tensor) -> torch.Tensor:
    picked = x.flatten(1)[:, ::2]
    return picked * picked


def quantized_pads() -> onnx.ModelProto:
    """timm's pad_same (kernel 3, stride 2) in float, as quantize_static leaves it in an int8
    model: each float constant and the result through QuantizeLinear → DequantizeLinear
    (scale 1/4: small integers quantize exactly). Pad, Mul, Relu."""
    nodes = [helper.make_node("Shape", ["image"], ["dims"])]

    def qdq(name: str) -> str:
        nodes.extend(
            [
                helper.make_node("QuantizeLinear", [name, "qs", "qz"], [name + "_q"]),
                helper.make_node("DequantizeLinear", [name + "_q", "qs", "qz"], [name + "_dq"]),
            ]
        )
        return name + "_dq"

    stride, one, kernel = qdq("stride"), qdq("one"), qdq("kernel")
    pads = []
    for axis in (2, 3):
        a = f"_{axis}"
        nodes += [
            helper.make_node("Gather", ["dims", f"ax{axis}"], ["size" + a], axis=0),
            helper.make_node("Cast", ["size" + a], ["sizef" + a], to=TensorProto.FLOAT),
            helper.make_node("Div", ["sizef" + a, stride], ["ratio" + a]),
            helper.make_node("Ceil", ["ratio" + a], ["up" + a]),
            helper.make_node("Sub", ["up" + a, one], ["less" + a]),
            helper.make_node("Mul", ["less" + a, stride], ["reach" + a]),
            helper.make_node("Add", ["reach" + a, kernel], ["span" + a]),
            helper.make_node("Sub", ["span" + a, "sizef" + a], ["gap" + a]),
        ]
        nodes.append(helper.make_node("Cast", [qdq("gap" + a)], ["pad" + a], to=TensorProto.INT64))
        pads.append("pad" + a)
    nodes += [
        helper.make_node("Concat", ["zeros6", *pads], ["pads"], axis=0),
        helper.make_node("Pad", ["image", "pads"], ["padded"]),
        helper.make_node("Mul", ["padded", "w"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["out"]),
    ]
    floats = {"stride": 2.0, "one": 1.0, "kernel": 3.0, "qs": 0.25}
    consts: dict[str, np.ndarray] = {n: np.array(v, np.float32) for n, v in floats.items()}
    consts.update({"qz": np.array(0, np.int8), "ax2": _i64(2), "ax3": _i64(3)})
    w = np.random.default_rng(4).standard_normal((1, 3, 7, 9)).astype(np.float32)
    return _model(nodes, {**consts, "zeros6": _i64(*[0] * 6), "w": w})


def torch_quantized_pads(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    pad_h, pad_w = ((-(-h // 2) - 1) * 2 + 3 - h), ((-(-w // 2) - 1) * 2 + 3 - w)
    weight = torch.from_numpy(numpy_helper.to_array(quantized_pads().graph.initializer[-1]))
    return F.relu(F.pad(x, (0, pad_w, 0, pad_h)) * weight)


CASES: dict[str, tuple[Callable[[], onnx.ModelProto], Callable[[torch.Tensor], torch.Tensor]]] = {
    "quantized_float_pads": (quantized_pads, torch_quantized_pads),
    "computed_pads": (computed_pads, torch_pads),
    "roll_as_slices": (rolled, torch_roll),
    "as_strided_gather": (strided, torch_strided),
}


@pytest.mark.parametrize("case", CASES)
def test_shape_arithmetic_folds_and_the_batch_stays_free(case: str) -> None:
    make, reference = CASES[case]
    explain = build_explain_model(make(), "vanilla", output_name="out")
    onnx.checker.check_model(explain, full_check=True)
    batch = explain.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # still dynamic
    run = session(explain)
    rng = np.random.default_rng(2)
    for n in (2, 3):
        image = rng.standard_normal((n, 3, 5, 7)).astype(np.float32)
        x = torch.from_numpy(image).requires_grad_(True)
        y = reference(x)
        seed = rng.standard_normal(tuple(y.shape)).astype(np.float32)
        (want,) = torch.autograd.grad((y * torch.from_numpy(seed)).sum(), x)
        got, out = run.run(["saliency", "out"], {"image": image, "output_grad": seed})
        np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_arithmetic_on_the_batch_size_stays_computed() -> None:
    """A Reshape to [Shape[0], 21·Shape[2]] reads the batch: it must not become a constant."""
    nodes = [
        helper.make_node("Shape", ["image"], ["dims"]),
        helper.make_node("Gather", ["dims", "first"], ["n"], axis=0),
        helper.make_node("Gather", ["dims", "ax2"], ["h"], axis=0),
        helper.make_node("Mul", ["h", "per_row"], ["row"]),  # 5 · 21 = C·H·W
        helper.make_node("Concat", ["n", "row"], ["target"], axis=0),
        helper.make_node("Reshape", ["image", "target"], ["flat"]),
        helper.make_node("Mul", ["flat", "flat"], ["out"]),
    ]
    consts = {"first": _i64(0), "ax2": _i64(2), "per_row": _i64(21)}
    model = _model(nodes, consts)
    explain = build_explain_model(model, "vanilla", output_name="out")
    ops = [n.op_type for n in explain.graph.node]
    assert "Shape" in ops and "Concat" in ops  # the batch entry is read at run time
    names = {t.name for t in explain.graph.initializer}
    assert "row" in names  # while the part from H alone was folded
    image = np.random.default_rng(3).standard_normal((3, 3, 5, 7)).astype(np.float32)
    seed = np.ones((3, 105), np.float32)
    (got,) = session(explain).run(["saliency"], {"image": image, "output_grad": seed})
    np.testing.assert_allclose(got, 2 * image, rtol=1e-6)
