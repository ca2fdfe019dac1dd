"""Quantized models (issue 17, item 5): the straight-through gradient of QuantizeLinear →
DequantizeLinear pairs, DynamicQuantizeLinear, MatMulInteger and ConvInteger, against PyTorch's fake
quantization (torch.fake_quantize_per_tensor_affine / _per_channel_affine), whose backward is
the straight-through estimator masked where the quantizer saturates.

The models are onnxruntime.quantization's own (quantize_static, QDQ format; quantize_dynamic);
the torch reference runs the same graph with each Q → DQ pair replaced by torch's fake
quantization at the stored scale and zero point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnxplain.graph_rewrite import build_explain_model
from onnxplain.graph_rewrite.errors import RewriteError
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from helpers import runtimes
from helpers.tiny import tiny_classifier

CLASS = 2
RANGES = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127)}


class _Calibration(CalibrationDataReader):
    def __init__(self, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(0)
        self._batches: Iterator[np.ndarray] = iter(
            [rng.standard_normal(shape).astype(np.float32) for _ in range(8)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}


def _saliency(model: onnx.ModelProto, method: str, image: np.ndarray) -> np.ndarray:
    explain = build_explain_model(model, method, output_name="logits")
    onnx.checker.check_model(explain, full_check=True)
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])
    seed = np.zeros((image.shape[0], 5), np.float32)
    seed[:, CLASS] = 1
    (got,) = session.run(["saliency"], {"image": image, "output_grad": seed})
    return got


def _relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return tiny_classifier(batch=2)


@pytest.fixture(scope="module")
def qdq_model(
    float_model: onnx.ModelProto, tmp_path_factory: pytest.TempPathFactory
) -> onnx.ModelProto:
    folder = tmp_path_factory.mktemp("qdq")
    onnx.save(float_model, folder / "float.onnx")
    quantize_static(
        folder / "float.onnx",
        folder / "int8.onnx",
        _Calibration((2, 3, 8, 8)),
        quant_format=QuantFormat.QDQ,
    )
    return onnx.load(folder / "int8.onnx")


def torch_qdq_logits(model: onnx.ModelProto, x: torch.Tensor) -> torch.Tensor:
    """The QDQ graph in torch: a QuantizeLinear is torch's fake quantization (its output then
    dequantized by its DequantizeLinear, which passes it on), a DequantizeLinear of a
    constant is the dequantized weight. Only the ops of the tiny classifier's export."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    values: dict[str, torch.Tensor] = {"image": x}
    quantized: set[str] = set()
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ins = list(node.input)
        if node.op_type == "QuantizeLinear":
            scale, zero = float(consts[ins[1]]), consts[ins[2]]
            low, high = RANGES[helper.np_dtype_to_tensor_dtype(zero.dtype)]
            out = torch.fake_quantize_per_tensor_affine(values[ins[0]], scale, int(zero), low, high)
            quantized.add(node.output[0])
        elif node.op_type == "DequantizeLinear":
            if ins[0] in quantized:
                out = values[ins[0]]
            else:
                q, scale = consts[ins[0]].astype(np.float64), consts[ins[1]].astype(np.float64)
                zero = consts[ins[2]].astype(np.float64) if len(ins) > 2 and ins[2] else 0.0
                if scale.ndim:  # per output channel (axis 0 of a weight)
                    shape = (-1,) + (1,) * (q.ndim - 1)
                    scale, zero = scale.reshape(shape), np.reshape(zero, shape)
                out = torch.from_numpy(((q - zero) * scale).astype(np.float32))
        elif node.op_type == "Conv":
            bias = values[ins[2]] if len(ins) > 2 else None
            out = F.conv2d(
                values[ins[0]],
                values[ins[1]],
                bias,
                stride=attrs.get("strides", [1, 1]),
                padding=attrs["pads"][:2],
            )
        elif node.op_type == "Relu":
            out = F.relu(values[ins[0]])
        elif node.op_type == "GlobalAveragePool":
            out = values[ins[0]].mean(dim=(2, 3), keepdim=True)
        elif node.op_type == "Flatten":
            out = values[ins[0]].flatten(1)
        elif node.op_type == "Gemm":
            assert attrs.get("transB") == 1
            out = values[ins[0]] @ values[ins[1]].T + values[ins[2]]
        elif node.op_type == "Softmax":
            continue
        else:
            raise AssertionError(f"the reference has no {node.op_type}")
        values[node.output[0]] = out
        if node.output[0] == "logits":
            break
    return values["logits"]  # the Gemm's output, before its own Q → DQ pair


def test_qdq_model_takes_the_straight_through_gradient(qdq_model: onnx.ModelProto) -> None:
    ops = {n.op_type for n in qdq_model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    image = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    got = _saliency(qdq_model, "vanilla", image)
    x = torch.from_numpy(image).requires_grad_(True)
    (want,) = torch.autograd.grad(torch_qdq_logits(qdq_model, x)[:, CLASS].sum(), x)
    assert _relative_l2(got, want.numpy()) < 1e-4


def test_int8_maps_follow_the_float_models(
    float_model: onnx.ModelProto, qdq_model: onnx.ModelProto
) -> None:
    """Quantization moves the vanilla map, but not far: its Pearson correlation with the
    float model's, over 8 images (bench/quantized_maps.py prints the figures, guided's too:
    quantize_static folds the ReLUs into the quantizers, so guided has none left to guide)."""
    images = np.random.default_rng(4).standard_normal((8, 3, 8, 8)).astype(np.float32)
    for pair in (images[i : i + 2] for i in range(0, 8, 2)):
        a, b = _saliency(float_model, "vanilla", pair), _saliency(qdq_model, "vanilla", pair)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8


def _pair_graph(scale: np.ndarray, zero: np.ndarray, axis: int = 1) -> onnx.ModelProto:
    """image → QuantizeLinear → DequantizeLinear → Mul(w) → logits, [2, 5, 3, 3]."""
    w = np.random.default_rng(5).standard_normal((1, 5, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"], name="quant", axis=axis),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dequant", axis=axis),
        helper.make_node("Mul", ["dq", "w"], ["logits"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "pair",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 5, 3, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 5, 3, 3])],
        [numpy_helper.from_array(v, n) for n, v in (("s", scale), ("z", zero), ("w", w))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _pair_map(model: onnx.ModelProto, image: np.ndarray, seed: np.ndarray) -> np.ndarray:
    explain = build_explain_model(model, "vanilla", output_name="logits")
    onnx.checker.check_model(explain, full_check=True)
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["saliency"], {"image": image, "output_grad": seed})[0]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_the_gradient_is_masked_where_the_quantizer_clips(dtype: type) -> None:
    """A coarse scale, so that a good share of the inputs saturates at either end."""
    zero = np.array(3 if dtype is np.int8 else 100, dtype)
    model = _pair_graph(np.array(0.02, np.float32), zero)
    rng = np.random.default_rng(6)
    image = (rng.standard_normal((2, 5, 3, 3)) * 2).astype(np.float32)
    seed = rng.standard_normal((2, 5, 3, 3)).astype(np.float32)
    got = _pair_map(model, image, seed)
    low, high = RANGES[helper.np_dtype_to_tensor_dtype(np.dtype(dtype))]
    x = torch.from_numpy(image).requires_grad_(True)
    w = torch.from_numpy(numpy_helper.to_array(model.graph.initializer[2]))
    y = torch.fake_quantize_per_tensor_affine(x, 0.02, int(zero), low, high) * w
    (want,) = torch.autograd.grad((y * torch.from_numpy(seed)).sum(), x)
    clipped = want.numpy() == 0
    assert 0.1 < clipped.mean() < 0.9  # both sides of the mask are exercised
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_per_channel_quantization_masks_along_its_axis() -> None:
    scale = np.array([0.01, 0.02, 0.05, 0.1, 0.5], np.float32)
    zero = np.array([0, -5, 10, 0, 3], np.int8)
    model = _pair_graph(scale, zero, axis=1)
    rng = np.random.default_rng(7)
    image = (rng.standard_normal((2, 5, 3, 3)) * 2).astype(np.float32)
    seed = rng.standard_normal((2, 5, 3, 3)).astype(np.float32)
    got = _pair_map(model, image, seed)
    x = torch.from_numpy(image).requires_grad_(True)
    w = torch.from_numpy(numpy_helper.to_array(model.graph.initializer[2]))
    fq = torch.fake_quantize_per_channel_affine(
        x, torch.from_numpy(scale), torch.from_numpy(zero.astype(np.int32)), 1, -128, 127
    )
    (want,) = torch.autograd.grad((fq * w * torch.from_numpy(seed)).sum(), x)
    assert 0.1 < (want.numpy() == 0).mean() < 0.9
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def _levels_inside(image: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """[qmin <= round(x / s) + z <= qmax] per channel (axis 1), as onnxruntime computes
    each op of the definition: Div, Round (half to even), Add, two comparisons."""
    shape = [1, -1, 1, 1]
    nodes = [
        helper.make_node("Div", ["x", "s"], ["ratio"]),
        helper.make_node("Round", ["ratio"], ["rounded"]),
        helper.make_node("Add", ["rounded", "z"], ["level"]),
        helper.make_node("GreaterOrEqual", ["level", "low"], ["above"]),
        helper.make_node("LessOrEqual", ["level", "high"], ["below"]),
        helper.make_node("And", ["above", "below"], ["inside"]),
    ]
    info = np.iinfo(zero.dtype)
    consts = {
        "s": scale.reshape(shape),
        "z": zero.astype(np.float32).reshape(shape),
        "low": np.array(info.min, np.float32),
        "high": np.array(info.max, np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "levels",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(image.shape))],
        [helper.make_tensor_value_info("inside", TensorProto.BOOL, list(image.shape))],
        [numpy_helper.from_array(v, n) for n, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["inside"], {"x": image})[0]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_the_mask_is_the_definitions_at_its_edges(dtype: type) -> None:
    """The rule compares x with two thresholds found at convert time; on the floats around
    each threshold (a few ulps either side of (qmin - z - 1/2)·s and (qmax - z + 1/2)·s,
    where the rounding decides) it must be the definition's mask exactly."""
    scale = np.array([0.01, 0.02, 0.05, 0.1, 0.37], np.float32)
    zero = np.array([0, -5, 10, 0, 3] if dtype is np.int8 else [0, 128, 7, 255, 30], dtype)
    info = np.iinfo(dtype)
    image = np.empty((2, 5, 3, 3), np.float32)
    for c in range(5):
        edges = [(info.min - int(zero[c]) - 0.5), (info.max - int(zero[c]) + 0.5)]
        values = []
        for edge in edges:
            at = np.float32(edge) * scale[c]
            up, down = at, at
            values.append(at)
            for _ in range(4):
                up, down = (
                    np.nextafter(up, np.float32(np.inf)),
                    np.nextafter(down, np.float32(-np.inf)),
                )
                values += [up, down]
        image[:, c] = np.asarray(values, np.float32).reshape(2, 3, 3)
    model = _pair_graph(scale, zero, axis=1)
    got = _pair_map(model, image, np.ones_like(image)) != 0
    want = _levels_inside(image, scale, zero)
    assert want.any() and not want.all()  # both sides of each edge are in the sample
    np.testing.assert_array_equal(got, want)


class _TwoConvs(torch.nn.Module):
    """conv 3x3/2 → ReLU → conv 3x3 → ReLU → mean → linear: the smallest net found on which
    OpenVINO's low-precision passes got the int8 explain map wrong."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, 1, 1)
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("runtime", runtimes.others())
def test_int8_explain_maps_agree_across_runtimes(tmp_path: Path, runtime: str) -> None:
    """OpenVINO's CPU plugin rewrites a QDQ graph for int8 kernels (its low-precision
    passes); on this net's explain model they gave maps 0.22 (vanilla, rel. L2) from
    onnxruntime's, the forward outputs still right. The engine turns them off for QDQ
    models, so that every runtime runs the quantizers as ONNX defines them."""
    net = _TwoConvs().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.onnx.export(
        net, (x,), str(tmp_path / "float.onnx"), dynamo=False, input_names=["image"],
        output_names=["logits"], opset_version=17,
    )  # fmt: skip
    classifier = [
        n.name for n in onnx.load(tmp_path / "float.onnx").graph.node if n.op_type == "Gemm"
    ]
    quantize_static(
        tmp_path / "float.onnx", tmp_path / "int8.onnx", _Calibration((2, 3, 32, 32)),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, nodes_to_exclude=classifier,
    )  # fmt: skip
    model = onnx.load(tmp_path / "int8.onnx")
    image = np.random.default_rng(9).standard_normal((2, 3, 32, 32)).astype(np.float32)
    seed = np.zeros((2, 5), np.float32)
    seed[:, CLASS] = 1
    feeds = {"image": image, "output_grad": seed}
    for method in ("vanilla", "guided", "input_x_gradient"):
        explain = build_explain_model(model, method, output_name="logits")
        (want,) = runtimes.load(runtimes.REFERENCE, explain)(feeds, ["saliency"])
        (got,) = runtimes.load(runtime, explain)(feeds, ["saliency"])
        assert np.abs(want).max() > 0
        assert _relative_l2(got, want) < 1e-5, method


def _vanilla_and_logits(
    model: onnx.ModelProto, image: np.ndarray, seed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The vanilla explain model's saliency and logits on onnxruntime, full-checked first."""
    explain = build_explain_model(model, "vanilla", output_name="logits")
    onnx.checker.check_model(explain, full_check=True)
    session = ort.InferenceSession(explain.SerializeToString(), providers=["CPUExecutionProvider"])
    got, logits = session.run(["saliency", "logits"], {"image": image, "output_grad": seed})
    return got, logits


def _mlp() -> onnx.ModelProto:
    """image[2, 3, 4, 4] → Flatten → MatMul → Relu → MatMul → logits[2, 5]."""
    rng = np.random.default_rng(8)
    w1 = rng.standard_normal((48, 16)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((16, 5)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dynamic_fake_quant(x: torch.Tensor) -> torch.Tensor:
    """DynamicQuantizeLinear then dequantized, as the ONNX spec defines its scale and zero
    point, with torch's straight-through gradient (the range itself not differentiated)."""
    low, high = torch.clamp(x.detach().min(), max=0), torch.clamp(x.detach().max(), min=0)
    scale = float((high - low) / 255)
    zero = int(torch.clamp(torch.round(-low / scale), 0, 255))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def test_dynamically_quantized_matmuls(tmp_path: Path) -> None:
    onnx.save(_mlp(), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx")
    model = onnx.load(tmp_path / "dynamic.onnx")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in model.graph.node}
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = []
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            b, b_zero = consts[node.input[1]].astype(np.float32), 0.0
            if len(node.input) > 3 and node.input[3]:
                b_zero = consts[node.input[3]].astype(np.float32)
            scale = next(
                consts[t]
                for t in consts
                if t.startswith(node.input[1].replace("_quantized", "")) and t.endswith("scale")
            )
            weights.append(torch.from_numpy((b - b_zero) * scale))
    rng = np.random.default_rng(9)
    image = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    seed = rng.standard_normal((2, 5)).astype(np.float32)
    got, logits = _vanilla_and_logits(model, image, seed)

    x = torch.from_numpy(image).requires_grad_(True)
    h = F.relu(_dynamic_fake_quant(x.flatten(1)) @ weights[0])
    y = _dynamic_fake_quant(h) @ weights[1]
    np.testing.assert_allclose(y.detach().numpy(), logits, rtol=1e-4, atol=1e-4)
    (want,) = torch.autograd.grad((y * torch.from_numpy(seed)).sum(), x)
    assert _relative_l2(got, want.numpy()) < 1e-4


def test_qoperator_models_are_refused_naming_the_op_and_node(
    float_model: onnx.ModelProto, tmp_path: Path
) -> None:
    onnx.save(float_model, tmp_path / "float.onnx")
    quantize_static(
        tmp_path / "float.onnx",
        tmp_path / "qop.onnx",
        _Calibration((2, 3, 8, 8)),
        quant_format=QuantFormat.QOperator,
    )
    model = onnx.load(tmp_path / "qop.onnx")
    with pytest.raises(
        RewriteError,
        match=r"the gradient stops at QLinearConv 'conv1_quant' \(output 'c1_quantized': int8\)",
    ):
        build_explain_model(model, "vanilla")


def test_blocked_quantization_is_refused_naming_the_node() -> None:
    model = _pair_graph(np.full((2, 1, 3, 3), 0.1, np.float32), np.zeros((2, 1, 3, 3), np.int8))
    for node in model.graph.node[:2]:
        node.attribute.append(helper.make_attribute("block_size", 5))
    model.opset_import[0].version = 21
    with pytest.raises(
        RewriteError, match=r"(DequantizeLinear 'dequant'|QuantizeLinear 'quant').*block_size"
    ):
        build_explain_model(model, "vanilla", output_name="logits")


def _conv_net() -> onnx.ModelProto:
    """Conv (stride 1, bias) → Relu → Conv (stride 2) → spatial mean: both of the
    ConvInteger rule's forms (the adjoint Conv, the transposed one)."""
    rng = np.random.default_rng(4)
    w1 = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(4) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((5, 4, 3, 3)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2", pads=[1] * 4, strides=[2, 2]),
        helper.make_node("ReduceMean", ["c2"], ["logits"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dynamically_quantized_convolutions(tmp_path: Path) -> None:
    onnx.save(_conv_net(), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx")
    model = onnx.load(tmp_path / "dynamic.onnx")
    assert [n.op_type for n in model.graph.node].count("ConvInteger") == 2
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # Each ConvInteger's weight as the float it stands for: (w - zw) · scale.
    weights = []
    for node in model.graph.node:
        if node.op_type == "ConvInteger":
            stem = node.input[1].replace("_quantized", "")
            w, zero = consts[node.input[1]].astype(np.float32), consts[node.input[3]]
            weights.append(
                torch.from_numpy((w - zero.astype(np.float32)) * consts[f"{stem}_scale"])
            )
    rng = np.random.default_rng(5)
    image = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    seed = rng.standard_normal((2, 5)).astype(np.float32)
    got, logits = _vanilla_and_logits(model, image, seed)

    x = torch.from_numpy(image).requires_grad_(True)
    bias = torch.from_numpy(consts["b1"].copy())
    h = F.relu(F.conv2d(_dynamic_fake_quant(x), weights[0], bias, padding=1))
    y = F.conv2d(_dynamic_fake_quant(h), weights[1], stride=2, padding=1).mean((2, 3))
    np.testing.assert_allclose(y.detach().numpy(), logits, rtol=1e-4, atol=1e-4)
    (want,) = torch.autograd.grad((y * torch.from_numpy(seed)).sum(), x)
    assert np.abs(want.numpy()).max() > 0
    assert _relative_l2(got, want.numpy()) < 1e-4
