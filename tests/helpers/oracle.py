"""An independent float64 oracle for the saliency maps of a whole ONNX model.

The reference is PyPI's `onnx2torch` (code nobody here wrote): the ONNX model, cut at the
explained output, becomes a PyTorch module; the float64 autograd gradient of
<seed, output> with respect to the input is the vanilla saliency, and Captum's
Deconvolution and GuidedBackprop on the same module give the other two methods for
`rectifiers="relu"` (Captum rectifies `nn.ReLU` modules only; onnx2torch makes one per
Relu node).

Float32 alone moves a deep net's map: a ReLU or a max-pool switch within rounding of its
kink or tie flips and carries a patch of the map with it. How far is measured on the model
and input at hand, and tolerances follow from it, never fixed:
- the control: the same module in float32, against float64;
- the spread: the float64 map itself at inputs moved by `SPREAD` (relative), the largest
  of a few samples: a near-tie that one float32 code happens to flip and another does
  not shows up here. (Light zoo's Inception-v1: onnxruntime's guided map is 2.5e-4 from
  float64 while torch's float32 control is 1.2e-7 from it; torch float64 with
  onnxruntime's max-pool switches imposed agrees with onnxruntime to 1.1e-7: a near-tie,
  not a wrong rule. OpenVINO's deconvnet map there is 5.6e-4 from onnxruntime's, one
  3x3 max-pool window whose top two inputs differ by 1e-5 in 8.4, ordered one way by
  each runtime's float32 rounding.)

Where onnx2torch cannot convert a model, `directional_error` checks vanilla maps against
central differences of the forward model on onnxruntime at several step sizes instead.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn

from helpers.torchvision_stub import torchvision_module

# Agreement asked of onnx2torch's float32 forward pass with onnxruntime's (relative L2)
# before its gradients count: a mistranslated op is off by O(1), rounding by ~1e-6.
FORWARD_TOLERANCE = 1e-4
# Relative size of the input moves that sample float32 rounding (see the module doc):
# float32 forward activations differ between runtimes by up to ~5e-6 (OpenVINO against
# onnxruntime on Inception-v1); at 1e-6 three samples missed the tie OpenVINO flips
# there, at 3e-6 they caught it, so 1e-5 leaves a margin.
SPREAD = 1e-5
SPREAD_SAMPLES = 3
FD_STEPS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
METHODS = ("vanilla", "deconvnet", "guided")


def relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def float64_gradient(
    net: nn.Module, x: np.ndarray, score: Callable[[torch.Tensor], torch.Tensor]
) -> np.ndarray:
    """d score(net(x)) / dx in float64, score summed over the batch, on a float64 copy of
    `net` (which stays as it is)."""
    xt = torch.from_numpy(x).double().requires_grad_()
    score(copy.deepcopy(net).double()(xt)).sum().backward()
    assert xt.grad is not None
    return xt.grad.numpy()


def max_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest elementwise error, relative to the largest entry of `want`."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


# ---------------------------------------------------------------- importing onnx2torch


def _stub_torchvision() -> None:
    # onnx2torch imports torchvision for its NonMaxSuppression and RoiAlign converters
    # only; none of the models here has those ops.
    torchvision_module("ops", "nms", "batched_nms", "roi_align", "box_convert")


def _onnx2torch_convert(model: onnx.ModelProto) -> nn.Module:
    _stub_torchvision()
    import onnx2torch

    return onnx2torch.convert(model)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- what onnx2torch reads


def cut_at(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """`model` with `output` (a graph output or an intermediate) as its only output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {vi.name: vi for vi in [*m.graph.output, *m.graph.value_info]}
    elem = known[output].type.tensor_type.elem_type if output in known else 0
    # No shape: a declared one may be stale (symbolic dims of a model whose input shape was
    # fixed since), and onnx2torch's converters read it; inference fills in the true one.
    chosen = helper.make_tensor_value_info(output, elem or onnx.TensorProto.FLOAT, None)
    del m.graph.output[:]
    m.graph.output.append(chosen)
    return m


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _padded_average_pool(
    node: onnx.NodeProto, in_shape: list[int], opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """An AveragePool with uneven pads as Pad, an unpadded AveragePool and a Mul.

    onnx2torch refuses uneven pads (Inception-v1's last pool pads one row and column at
    the end). Zero padding, a plain average over the kernel, then x kernel size / count of
    real entries per window, is the same pool for either count_include_pad.
    """
    a = _attrs(node)
    kernel, pads = list(a["kernel_shape"]), list(a["pads"])
    strides = list(a.get("strides", [1] * len(kernel)))
    if (
        len(kernel) != 2
        or a.get("ceil_mode")
        or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
    ):
        raise NotImplementedError(f"AveragePool {node.name!r}: not 2-D, ceil_mode or auto_pad")
    spatial = in_shape[2:]
    ones = torch.ones(1, 1, *spatial, dtype=torch.float64)
    halves = len(kernel)
    padded = torch.nn.functional.pad(ones, _torch_pads(pads, halves))
    count = torch.nn.functional.avg_pool2d(padded, kernel, strides) * float(np.prod(kernel))
    if a.get("count_include_pad"):
        count = torch.full_like(count, float(np.prod(kernel)))
    scale = (float(np.prod(kernel)) / count).numpy().astype(np.float32)
    x, y = node.input[0], node.output[0]
    names = [f"{y}__padded", f"{y}__pooled", f"{y}__scale", f"{y}__pads"]
    if opset < 11:
        pad = helper.make_node(
            "Pad", [x], [names[0]], pads=[0, 0, *pads[:halves], 0, 0, *pads[halves:]]
        )
        inits = []
    else:
        pad = helper.make_node("Pad", [x, names[3]], [names[0]])
        full = np.array([0, 0, *pads[:halves], 0, 0, *pads[halves:]], np.int64)
        inits = [numpy_helper.from_array(full, names[3])]
    pool = helper.make_node(
        "AveragePool", [names[0]], [names[1]], kernel_shape=kernel, strides=strides
    )
    mul = helper.make_node("Mul", [names[1], names[2]], [y])
    return [pad, pool, mul], [*inits, numpy_helper.from_array(scale, names[2])]


def _torch_pads(pads: list[int], halves: int) -> tuple[int, ...]:
    # ONNX: [x1_begin, x2_begin, x1_end, x2_end]; F.pad: last axis first, (begin, end).
    out: list[int] = []
    for axis in reversed(range(halves)):
        out += [pads[axis], pads[axis + halves]]
    return tuple(out)


def _with_measured_shapes(
    model: onnx.ModelProto, input_name: str, example: np.ndarray
) -> onnx.ModelProto:
    """`model` with the shape of every float tensor that inference missed, measured.

    onnx's shape inference stops at a Reshape to a computed shape (PaddleOCR rec's SVTR
    blocks); running the model once on onnxruntime with those tensors as outputs gives
    their shapes at this input size.
    """
    known = {vi.name for vi in model.graph.value_info if vi.type.tensor_type.HasField("shape")}
    known |= {vi.name for vi in [*model.graph.input, *model.graph.output]}
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
    missing = [
        o
        for n in model.graph.node
        for o in n.output
        if o and o not in known and elem.get(o) in floats and n.op_type != "Constant"
    ]
    if not missing:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(o, elem[o], None) for o in missing)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts, ["CPUExecutionProvider"])
    values = sess.run(missing, {input_name: example})
    m = onnx.ModelProto()
    m.CopyFrom(model)
    kept = [vi for vi in m.graph.value_info if vi.name not in set(missing)]
    del m.graph.value_info[:]
    m.graph.value_info.extend(kept)
    m.graph.value_info.extend(
        helper.make_tensor_value_info(o, elem[o], list(v.shape)) for o, v in zip(missing, values)
    )
    return m


def for_onnx2torch(model: onnx.ModelProto, input_name: str, example: np.ndarray) -> onnx.ModelProto:
    """`model` rewritten, exactly, into the ops and forms onnx2torch converts.

    - tensor Constant nodes become initializers (Paddle stores every weight as a Constant,
      onnx2torch's Conv and Gemm read weights from initializers only);
    - Dropout becomes Identity (inference; onnx2torch has no converter before opset 10);
    - an AveragePool with uneven pads is spelt out (see `_padded_average_pool`).
    Every tensor's shape at the size of `example` is recorded first (inferred, or measured
    where inference gives up); a copy is returned, `model` is left as it was.
    """
    # Shapes propagated through shape computations (data_prop) first: onnx2torch infers
    # shapes without it, and then, on PaddleOCR's models, gets BatchNorm's rank wrong
    # (rec) or computes another forward pass (det, 0.55 off onnxruntime's).
    m = onnx.shape_inference.infer_shapes(model, data_prop=True)
    m = _with_measured_shapes(m, input_name, example)
    opset = _opset(m)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*m.graph.value_info, *m.graph.input]
    }
    nodes: list[onnx.NodeProto] = []
    for node in m.graph.node:
        a = _attrs(node)
        if node.op_type == "Constant" and "value" in a:
            m.graph.initializer.append(
                numpy_helper.from_array(numpy_helper.to_array(a["value"]), node.output[0])
            )
        elif node.op_type == "Dropout":
            nodes.append(
                helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)
            )
        elif node.op_type == "AveragePool" and _uneven(a.get("pads")):
            more, inits = _padded_average_pool(node, shapes[node.input[0]], opset)
            nodes += more
            m.graph.initializer.extend(inits)
        else:
            nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def _uneven(pads: list[int] | None) -> bool:
    return bool(pads) and pads[: len(pads) // 2] != pads[len(pads) // 2 :]  # type: ignore[index]


# ---------------------------------------------------------------- the reference


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Captum announces its ReLU hooks, onnx2torch's Slice indexes with a list (deprecated
    # in torch): neither says anything about the result.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
        warnings.filterwarnings("ignore", "Using a non-tuple sequence")
        yield


class Seeded(nn.Module):
    """<seed, net(x)> per sample, shaped [N, 1]: Captum's `target=0` then explains it."""

    def __init__(self, net: nn.Module, seed: torch.Tensor) -> None:
        super().__init__()
        self.net, self.seed = net, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return (y * self.seed.reshape(y.shape)).reshape(y.shape[0], -1).sum(1, keepdim=True)


def _cast_to(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of an onnx2torch module in `dtype`: weights, buffers and in-graph Casts.

    A Cast to float32 inside the graph would otherwise put a float32 step in a float64 run.
    """
    typed = copy.deepcopy(module).to(dtype)
    for sub in typed.modules():
        if getattr(sub, "torch_dtype", None) in (torch.float32, torch.float64):
            sub.torch_dtype = dtype  # type: ignore[assignment]
    return typed


class TorchReference:
    """onnx2torch's module for one model, cut at one output, in float32 and float64."""

    def __init__(
        self, model: onnx.ModelProto, input_name: str, output: str, example: np.ndarray
    ) -> None:
        inits = {t.name for t in model.graph.initializer}
        others = [vi.name for vi in model.graph.input if vi.name not in inits | {input_name}]
        if others:
            raise ValueError(f"the oracle handles one-input models; {others} are inputs too")
        self._source = (model, input_name, output, example)
        self._single: nn.Module | None = None
        self._double: nn.Module | None = None
        self.single  # noqa: B018 (converted now: a model onnx2torch refuses fails here)

    @property
    def single(self) -> nn.Module:
        """The module in float32, converted from the model (again, after `park`)."""
        if self._single is None:
            model, input_name, output, example = self._source
            self._single = _onnx2torch_convert(
                for_onnx2torch(cut_at(model, output), input_name, example)
            ).eval()
        return self._single

    def park(self) -> None:
        """Frees the float32 module until it is next used; converting the same model gives
        the same module again. Its weights are dropped at once (see `float64`)."""
        if self._single is not None:
            self._single.to_empty(device="meta")
            self._single = None

    @contextlib.contextmanager
    def float64(self) -> Iterator[nn.Module]:
        """The module in float64, made on entry and freed on exit (or the enclosing block's).

        Kept beside the float32 module for a whole test module it cost twice the float32
        one (VGG-19: 1.15 GB) while the runtimes loaded their sessions; made when needed it
        costs a cast of a second or two. Its weights are dropped on exit (moved to the
        meta device, which stores nothing): onnx2torch's fx module refers to itself, and
        callers' frames refer to it, so counting references would not free them."""
        if self._double is not None:
            yield self._double
            return
        self._double = _cast_to(self.single, torch.float64)
        try:
            yield self._double
        finally:
            self._double.to_empty(device="meta")
            self._double = None

    @contextlib.contextmanager
    def _module(self, dtype: torch.dtype) -> Iterator[nn.Module]:
        if dtype == torch.float64:
            with self.float64() as double:
                yield double
        else:
            yield self.single

    def forward(self, image: np.ndarray, dtype: torch.dtype = torch.float32) -> np.ndarray:
        with self._module(dtype) as module, torch.no_grad(), _quiet():
            y = module(torch.from_numpy(image).to(dtype))
        return y.double().numpy()

    def forward_error(self, image: np.ndarray, onnxruntime_value: np.ndarray) -> float:
        """Relative L2 distance of the float32 forward pass from onnxruntime's."""
        return relative_l2(self.forward(image).reshape(onnxruntime_value.shape), onnxruntime_value)

    def saliency(
        self, method: str, image: np.ndarray, seed: np.ndarray, dtype: torch.dtype
    ) -> np.ndarray:
        """The `method` map of <seed, output> at `image`, computed in `dtype`."""
        with self._module(dtype) as module:
            net = Seeded(module, torch.from_numpy(seed).to(dtype))
            x = torch.from_numpy(image).to(dtype).requires_grad_(True)
            if method == "vanilla":
                with _quiet():
                    (grad,) = torch.autograd.grad(net(x).sum(), x)
                return grad.double().numpy()
            from captum.attr import Deconvolution, GuidedBackprop

            explainer = Deconvolution(net) if method == "deconvnet" else GuidedBackprop(net)
            with _quiet():
                return explainer.attribute(x, target=0).detach().double().numpy()


class Oracle:
    """Float64 maps for one model, input and seed, and how much float32 moves them."""

    def __init__(self, reference: TorchReference, image: np.ndarray, seed: np.ndarray) -> None:
        self.reference, self.image, self.seed = reference, image, seed
        self._exact: dict[str, np.ndarray] = {}
        self._control: dict[str, tuple[float, float]] = {}
        self._spread: dict[str, tuple[float, float]] = {}

    def exact(self, method: str) -> np.ndarray:
        if method not in self._exact:
            self._exact[method] = self.reference.saliency(
                method, self.image, self.seed, torch.float64
            )
        return self._exact[method]

    def control(self, method: str) -> tuple[float, float]:
        """Relative L2 and max error of the float32 module's map against float64."""
        if method not in self._control:
            single = self.reference.saliency(method, self.image, self.seed, torch.float32)
            exact = self.exact(method)
            self._control[method] = (relative_l2(single, exact), max_error(single, exact))
        return self._control[method]

    def spread(self, method: str) -> tuple[float, float]:
        """Largest relative L2 and max error of float64 maps at inputs moved by SPREAD."""
        if method not in self._spread:
            rng = np.random.default_rng(0)
            exact, image = self.exact(method), self.image.astype(np.float64)
            scale = SPREAD * float(np.sqrt(np.mean(image**2)))
            l2 = peak = 0.0
            with self.reference.float64():  # one float64 module for every sample
                for _ in range(SPREAD_SAMPLES):
                    moved = image + scale * rng.standard_normal(image.shape)
                    other = self.reference.saliency(method, moved, self.seed, torch.float64)
                    l2 = max(l2, relative_l2(other, exact))
                    peak = max(peak, max_error(other, exact))
            self._spread[method] = (l2, peak)
        return self._spread[method]

    def figures(self, method: str) -> tuple[tuple[float, float] | None, ...]:
        """(control, spread) as measured so far for `method`: None where not measured."""
        return self._control.get(method), self._spread.get(method)

    def judge(
        self,
        method: str,
        got: np.ndarray,
        factor: float,
        floor: float,
        want: np.ndarray | None = None,
    ) -> tuple[float, float, str]:
        """(relative L2, max error, verdict) of `got` against `want` (default: float64).

        The verdict is "" when both are within max(`factor` x what float32 rounding does
        to this method's map on this model and input, `floor`), else says by how much not.
        The spread is measured only when the control alone does not cover the error (it
        costs several float64 passes), which gives the same verdict as always measuring.
        """
        want = self.exact(method) if want is None else want
        l2, peak = relative_l2(got, want), max_error(got, want)
        figures = [self.control(method)]

        def bounds() -> tuple[float, float]:
            return (
                max(factor * max(f[0] for f in figures), floor),
                max(factor * max(f[1] for f in figures), floor),
            )

        if not (l2 < bounds()[0] and peak < bounds()[1]):
            figures.append(self.spread(method))
        l2_bound, peak_bound = bounds()
        if l2 < l2_bound and peak < peak_bound:
            return l2, peak, ""
        spread = f"{figures[1][0]:.3g} / {figures[1][1]:.3g}" if len(figures) > 1 else "-"
        return (
            l2,
            peak,
            (
                f"{method}: relative L2 {l2:.3g} (bound {l2_bound:.3g}), max error {peak:.3g} "
                f"(bound {peak_bound:.3g}); float32 control {figures[0][0]:.3g} / "
                f"{figures[0][1]:.3g}, spread {spread}"
            ),
        )


# ---------------------------------------------------------------- fallback


def directional_error(
    forward: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    seed: np.ndarray,
    saliency: np.ndarray,
    directions: int = 3,
    steps: tuple[float, ...] = FD_STEPS,
    rng_seed: int = 0,
) -> float:
    """Fallback oracle: |<seed, central difference of forward along v> - <saliency, v>|.

    Relative to |<saliency, v>| or the size of its terms, whichever is larger; the worst
    over random directions v, each at the best of several steps (a large step crosses
    kinks, a small one drowns in float32 rounding; no one step suits every model).
    """
    rng = np.random.default_rng(rng_seed)
    seed64 = np.asarray(seed, np.float64)
    worst = 0.0
    for _ in range(directions):
        v = rng.standard_normal(image.shape)
        analytic = float(np.sum(np.asarray(saliency, np.float64) * v))
        typical = float(np.linalg.norm(saliency) * np.linalg.norm(v)) / np.sqrt(v.size)
        scale = max(abs(analytic), typical)
        best = np.inf
        for h in steps:
            plus = forward((image + h * v).astype(image.dtype)).astype(np.float64)
            minus = forward((image - h * v).astype(image.dtype)).astype(np.float64)
            numeric = float(np.sum(seed64.reshape(plus.shape) * (plus - minus)) / (2 * h))
            best = min(best, abs(numeric - analytic) / scale)
        worst = max(worst, best)
    return worst
