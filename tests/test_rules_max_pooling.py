"""MaxPool backward in both forms (portable: no Indices; onnxruntime: Indices + scatter)
against PyTorch autograd, on inputs full of exact ties, and on a second runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import session, single_op_model

torch = pytest.importorskip("torch")
F = torch.nn.functional

TARGETS = ["portable", "onnxruntime"]

# (spatial, attrs): overlapping windows, pads (asymmetric too), ceil_mode, dilations, 1-3 D.
CASES = [
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ((8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((10, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((8, 7), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1]}),
    ((9, 10), {"kernel_shape": [2, 3], "dilations": [2, 2], "strides": [1, 2]}),
    ((7, 7), {"kernel_shape": [2, 2], "strides": [2, 2]}),  # a row and column no window reads
    ((8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((6, 6), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    ((10, 11), {"kernel_shape": [2, 2], "strides": [3, 3], "pads": [0, 1, 1, 0]}),  # k < s
    ((9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [2, 2], "pads": [2] * 4}),
    ((11,), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((5, 6, 7), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 2], "ceil_mode": 1}),
]
IDS = [f"{len(s)}d-{i}" for i, (s, _) in enumerate(CASES)]


def _tied(spatial: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Integers 0..2: most windows hold their maximum more than once."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, (2, 3, *spatial)).astype(np.float32)


def _torch_grad(x: np.ndarray, dy: np.ndarray, attrs: dict) -> np.ndarray:
    """PyTorch's max-pool gradient, with ONNX's (possibly asymmetric) pads as -inf padding."""
    nd = x.ndim - 2
    pads = attrs.get("pads", [0] * (2 * nd))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    # F.pad lists pads from the last axis backwards, (begin, end) for each.
    torch_pads = [p for i in reversed(range(nd)) for p in (pads[i], pads[nd + i])]
    padded = F.pad(xt, torch_pads, value=-np.inf)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
    y = pool(
        padded,
        attrs["kernel_shape"],
        attrs.get("strides", 1),
        dilation=attrs.get("dilations", 1),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )
    assert y.shape == dy.shape, "PyTorch and onnxruntime disagree on the pooled shape"
    y.backward(torch.tensor(dy, dtype=torch.float64))
    return xt.grad.numpy()


def _saliency(model: onnx.ModelProto, target: str, x: np.ndarray, seed: int = 1) -> tuple:
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0", target=target)
    y = session(model).run(None, {"x": x})[0]
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
    (saliency,) = session(explain).run(["saliency"], {"x": x, "output_grad": dy})
    return explain, dy, saliency


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("spatial", "attrs"), CASES, ids=IDS)
def test_ties_go_to_the_first_maximum_as_in_torch(target, spatial, attrs) -> None:
    x = _tied(spatial)
    _, dy, saliency = _saliency(single_op_model("MaxPool", {"x": x}, attrs), target, x)
    # Up to float32 rounding of the sums where windows overlap.
    np.testing.assert_allclose(saliency, _torch_grad(x, dy, attrs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_all_equal_windows(target) -> None:
    x = np.full((1, 2, 7, 7), 3.0, dtype=np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    _, dy, saliency = _saliency(single_op_model("MaxPool", {"x": x}, attrs), target, x)
    np.testing.assert_allclose(saliency, _torch_grad(x, dy, attrs), rtol=1e-6, atol=1e-6)


def test_portable_form_uses_no_indices() -> None:
    x = _tied((9, 9))
    model = single_op_model("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "strides": [2, 2]})
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    pools = [n for n in explain.graph.node if n.op_type == "MaxPool"]
    assert [len([o for o in n.output if o]) for n in pools] == [1]
    assert "ScatterElements" not in {n.op_type for n in explain.graph.node}


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [2, 2], "strides": [2, 2]},
    ],
)
def test_dynamic_spatial_sizes(attrs) -> None:
    """Height and width known only at run time: one explain model, several image sizes."""
    x = _tied((9, 9))
    model = single_op_model("MaxPool", {"x": x}, attrs)
    for vi in (model.graph.input[0], model.graph.output[0]):
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            dim.dim_param = f"d{i}"
    del model.graph.value_info[:]
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0")
    forward, backward = session(model), session(explain)
    for spatial in ((9, 9), (10, 7), (6, 11)):
        x = _tied(spatial, seed=sum(spatial))
        y = forward.run(None, {"x": x})[0]
        dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
        (saliency,) = backward.run(["saliency"], {"x": x, "output_grad": dy})
        np.testing.assert_allclose(saliency, _torch_grad(x, dy, attrs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("spatial", "attrs"), CASES[:4] + CASES[-2:], ids=IDS[:4] + IDS[-2:])
def test_openvino_agrees(spatial, attrs) -> None:
    """The portable form on OpenVINO CPU gives onnxruntime's gradient, ties included."""
    ov = pytest.importorskip("openvino")
    x = _tied(spatial)
    explain, dy, saliency = _saliency(single_op_model("MaxPool", {"x": x}, attrs), "portable", x)
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(explain.SerializeToString(), b""),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32"},
    )
    theirs = compiled({"x": x, "output_grad": dy})["saliency"]
    np.testing.assert_allclose(theirs, saliency, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_dynamic_batch_kernel_smaller_than_stride(target) -> None:
    """A phase no window reads gets zeros shaped by the batch known only at run time."""
    attrs = {"kernel_shape": [2, 2], "strides": [3, 3], "pads": [1, 1, 0, 0]}
    x = _tied((10, 11))
    model = single_op_model("MaxPool", {"x": x}, attrs)
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    explain = build_explain_model(model, "vanilla", input_name="x", output_name="y0", target=target)
    for batch in (1, 3):
        xb = _tied((10, 11), seed=batch)[:1].repeat(batch, axis=0) + np.arange(batch).reshape(
            -1, 1, 1, 1
        ).astype(np.float32)
        y = session(model).run(None, {"x": xb})[0]
        dy = np.random.default_rng(batch).standard_normal(y.shape).astype(np.float32)
        (saliency,) = session(explain).run(["saliency"], {"x": xb, "output_grad": dy})
        np.testing.assert_allclose(saliency, _torch_grad(xb, dy, attrs), rtol=1e-6, atol=1e-6)
