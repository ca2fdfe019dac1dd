"""Whole-model checks on the nine architectures of onnx's `backend/test/data/light/`.

These opset-9, IR-3 models come with every weight as a ConstantOfShape fill (0.02 everywhere),
so each fill is redrawn at random, by the role of the tensor it feeds (He-normal conv and
Gemm weights, BatchNorm statistics near the identity), seeded.

Two independent oracles:
- vanilla saliency against central finite differences of the forward model (tests/fd.py);
- all three methods against PyTorch on the same weights: a small interpreter runs the
  ONNX graph as torch ops with one `nn.ReLU` module per Relu node, so that autograd gives
  the vanilla gradient and Captum's Deconvolution and GuidedBackprop give the others.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from onnx import helper, numpy_helper
from onnxplain.graph_rewrite import build_explain_model, default_input, default_output

from fd import session, with_first_output
from fd import session_vjp_error as fd_error
from nets import TORCH_OPS, OnnxAsTorch, node_attributes

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
FAST = ["bvlc_alexnet", "squeezenet", "shufflenet", "zfnet512", "inception_v1"]
SLOW = ["densenet121", "inception_v2", "resnet50", "vgg19"]
MODELS = [*FAST, *(pytest.param(name, marks=pytest.mark.slow) for name in SLOW)]
TARGET_CLASS = 281

# onnxruntime has no float64 Conv, so <u, Jv> comes from float32 central differences
# through up to 120 layers at 224x224: a step of 1e-3 crosses ReLU kinks and max-pool
# switches, a smaller one drowns in rounding. Measured 3e-2 to 6e-2 on the plain nets; the
# deep BatchNorm nets are more chaotic (~0.2-0.3: even torch's float32 and float64 vanilla
# gradients part by a few percent there). So this catches gross errors only (a transposed
# kernel, a lost branch err by O(1)); the torch comparison below is the precise check.
FD_STEP = 1e-3
FD_TOLERANCE = {"inception_v2": 0.6, "resnet50": 0.6, "densenet121": 0.6}
FD_DEFAULT_TOLERANCE = 0.15
# Ours (float32) against torch: equal to torch's float32 map within TORCH_FLOOR, or else
# as close to torch's float64 map as ROUNDING_FACTOR times torch's own float32 map is.
# Float32 rounding flips the odd ReLU mask or max-pool switch in the deep BatchNorm nets,
# a handful of them, each moving a patch of the map: measured up to 2e-2 for vanilla on
# ResNet-50, 3.5e-4 for guided on DenseNet-121 (7x torch's own float32 distance there, and
# concentrated in a few patches, as flips are). No float32 code does much better; a wrong
# rule spreads its error over the whole map and exceeds the bound.
ROUNDING_FACTOR = 10.0
TORCH_FLOOR = 1e-4


# ---------------------------------------------------------------- redrawing weights


def _consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            uses[name].append((node, i))
    return uses


def _use(
    name: str, uses: dict[str, list[tuple[onnx.NodeProto, int]]]
) -> tuple[onnx.NodeProto, int, str]:
    """The op a weight feeds, its input slot there and its name there, past Unsqueeze/Reshape."""
    node, slot = uses[name][0]
    if node.op_type in ("Unsqueeze", "Reshape") and slot == 0:
        return _use(node.output[0], uses)
    return node, slot, name


def _fan_in(consumer: onnx.NodeProto, shape: list[int]) -> int:
    """Inputs summed into each output unit, from the weight's shape where it is used."""
    if consumer.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in consumer.attribute)
        return shape[1] if trans_b else shape[0]
    return int(np.prod(shape[1:]))


def _draw(
    shape: tuple[int, ...],
    use: tuple[onnx.NodeProto, int, str],
    shapes_there: dict[str, list[int]],
    rng: np.random.Generator,
) -> np.ndarray:
    consumer, slot, name_there = use
    op = consumer.op_type
    if op in ("Conv", "Gemm") and slot == 1:
        # He-normal: keeps the activations' scale through a ReLU net of any depth.
        fan_in = _fan_in(consumer, shapes_there[name_there])
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if (op, slot) in (("BatchNormalization", 1), ("BatchNormalization", 4), ("Mul", 1)):
        return rng.uniform(0.5, 1.5, shape)  # scales and variances near 1
    if (op, slot) in (
        ("Conv", 2), ("Gemm", 2), ("BatchNormalization", 2), ("BatchNormalization", 3), ("Add", 1)
    ):  # fmt: skip
        return rng.normal(0.0, 0.1, shape)  # biases and means near 0
    raise AssertionError(f"no initialisation for a weight feeding {op} input {slot}")


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*inferred.graph.value_info, *inferred.graph.input]
    }


def calibrate_batchnorm(model: onnx.ModelProto, image: np.ndarray) -> None:
    """Sets every BatchNormalization's statistics to those of its input on `image`, in place.

    Random weights leave the running statistics meaningless, and residual sums or the
    pretrained statistics left in some of these files blow activations up by 1e4-1e6:
    statistics measured layer by layer keep every normalised activation near unit scale.
    """
    inits = {t.name: t for t in model.graph.initializer}
    values = {n: torch.from_numpy(numpy_helper.to_array(t).copy()) for n, t in inits.items()}
    values[default_input(model)] = torch.from_numpy(image)
    for node in model.graph.node:
        args = [values[n] for n in node.input]
        if node.op_type == "BatchNormalization":
            mean, var = node.input[3], node.input[4]
            values[mean] = args[0].mean(dim=(0, 2, 3))
            values[var] = args[0].var(dim=(0, 2, 3), unbiased=False)
            for name in (mean, var):
                inits[name].CopyFrom(numpy_helper.from_array(values[name].numpy(), name))
            args = [values[n] for n in node.input]
        if node.op_type == "Softmax":
            return
        op = torch.relu if node.op_type == "Relu" else TORCH_OPS[node.op_type]
        with torch.no_grad():
            values[node.output[0]] = op(*args, **node_attributes(node))


def redraw_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """`model` with each ConstantOfShape weight replaced by a random initializer."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph = m.graph
    uses = _consumers(m)
    shapes_there = _inferred_shapes(m)
    fill_inputs = {n.input[0] for n in graph.node if n.op_type == "ConstantOfShape"}
    fill_shapes = {
        t.name: tuple(int(v) for v in numpy_helper.to_array(t))
        for t in graph.initializer
        if t.name in fill_inputs
    }
    fills = [n for n in graph.node if n.op_type == "ConstantOfShape" and n.input[0] in fill_shapes]
    weights = []
    for fill in fills:
        name, shape = fill.output[0], fill_shapes[fill.input[0]]
        value = _draw(shape, _use(name, uses), shapes_there, rng).astype(np.float32)
        weights.append(numpy_helper.from_array(value, name))
    spent = {fill.input[0] for fill in fills}
    keep_nodes = [n for n in graph.node if n not in fills]
    keep_inits = [t for t in graph.initializer if t.name not in spent]
    keep_inputs = [vi for vi in graph.input if vi.name not in spent]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(keep_nodes)
    graph.initializer.extend([*keep_inits, *weights])
    # IR 3 lists every initializer as a graph input too; keep the model that old.
    graph.input.extend(keep_inputs)
    graph.input.extend(
        helper.make_tensor_value_info(w.name, onnx.TensorProto.FLOAT, list(w.dims)) for w in weights
    )
    calibrate_batchnorm(m, _image(m, seed=seed + 1)[1])
    onnx.checker.check_model(m)
    return m


# ---------------------------------------------------------------- fixtures and tests


def _image(model: onnx.ModelProto, seed: int = 1) -> tuple[str, np.ndarray]:
    """The explained input's name and a random image for it."""
    name = default_input(model)
    vi = next(vi for vi in model.graph.input if vi.name == name)
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return name, np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class Light:
    """One redrawn model, its test image, and its sessions, each built once.

    Converting and loading these models costs seconds (VGG-19 carries 550 MB of weights),
    running them a fraction of that, so every test of one model shares them.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.model = redraw_weights(onnx.load(str(LIGHT / f"light_{name}.onnx")))
        self.input, self.image = _image(self.model)
        self.forward = session(with_first_output(self.model, default_output(self.model)))
        self._explain: dict[str, onnx.ModelProto] = {}
        self._sessions: dict[str, ort.InferenceSession] = {}

    def explain(self, method: str) -> onnx.ModelProto:
        if method not in self._explain:
            # The logits as the original graph names them (the opset-9 Softmax of squeezenet
            # is rewritten by the opset conversion, which renames its input).
            logits = default_output(self.model)
            self._explain[method] = build_explain_model(self.model, method, output_name=logits)
        return self._explain[method]

    def explain_session(self, method: str) -> ort.InferenceSession:
        if method not in self._sessions:
            self._sessions[method] = session(self.explain(method))
        return self._sessions[method]


@pytest.fixture(scope="module", params=MODELS)
def light(request: pytest.FixtureRequest) -> Light:
    return Light(request.param)


def test_vanilla_matches_finite_differences(light: Light) -> None:
    feeds = {light.input: light.image}
    explain = light.explain_session("vanilla")
    err = fd_error(light.forward, explain, feeds, light.input, np.float32, FD_STEP, 2, 0)
    tolerance = FD_TOLERANCE.get(light.name, FD_DEFAULT_TOLERANCE)
    assert err < tolerance, f"VJP mismatch {err:.3g} in float32"


def _theirs(light: Light, method: str, dtype: torch.dtype) -> np.ndarray:
    net = OnnxAsTorch(light.model, light.input, default_output(light.model)).to(dtype).eval()
    image = torch.from_numpy(light.image.copy()).to(dtype).requires_grad_(True)
    if method == "vanilla":
        (grad,) = torch.autograd.grad(net(image)[0, TARGET_CLASS], image)
        return grad.double().numpy()
    explainer = Deconvolution(net) if method == "deconvnet" else GuidedBackprop(net)
    return explainer.attribute(image, target=TARGET_CLASS).detach().double().numpy()


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_method_matches_torch_on_same_weights(light: Light, method: str) -> None:
    sess = light.explain_session(method)
    grad_input = next(i for i in sess.get_inputs() if i.name == "output_grad")
    seed = np.zeros(grad_input.shape, np.float32)  # [1, 1000] or [1, 1000, 1, 1]
    seed.reshape(-1)[TARGET_CLASS] = 1.0
    original = light.model.graph.output[0].name
    feeds = {light.input: light.image, "output_grad": seed}
    probs, got = sess.run([original, "saliency"], feeds)
    # The original output rides along unchanged (up to rounding: onnxruntime fuses the
    # forward part of the explain graph a little differently).
    want_probs = light.forward.run([original], {light.input: light.image})[0]
    np.testing.assert_allclose(probs, want_probs, rtol=1e-4, atol=1e-4 * np.abs(want_probs).max())
    assert got.shape == light.image.shape and np.all(np.isfinite(got))
    single = _theirs(light, method, torch.float32)
    assert np.abs(single).max() > 0
    if _relative(got, single) < TORCH_FLOOR:
        return  # as close to torch's float32 result as two float32 codes can be
    exact = _theirs(light, method, torch.float64)
    bound = max(ROUNDING_FACTOR * _relative(single, exact), TORCH_FLOOR)
    err = _relative(got, exact)
    assert err < bound, f"{method}: relative L2 error {err:.3g} against torch, bound {bound:.3g}"


def test_explain_model_passes_the_checker(light: Light) -> None:
    onnx.checker.check_model(light.explain("guided"), full_check=True)
