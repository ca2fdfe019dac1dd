"""Small PyTorch image classifiers for the parity tests, and their ONNX export.

Every rectifier is its own non-inplace `nn.ReLU` module, because Captum's Deconvolution
and GuidedBackprop swap the backward pass of `nn.ReLU` modules only (a functional relu,
or one module called twice, would escape or confuse its hooks).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn


def conv_relu(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, pad: int = 1
) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, pad), nn.ReLU())


class VGGStyle(nn.Sequential):
    """Two blocks of two 3x3 convs and a 2x2 max-pool, then a two-layer classifier."""

    def __init__(self, classes: int = 10, size: int = 32) -> None:
        side = size // 4
        super().__init__(
            conv_relu(3, 8),
            conv_relu(8, 8),
            nn.MaxPool2d(2),
            conv_relu(8, 16),
            conv_relu(16, 16),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * side * side, 32),
            nn.ReLU(),
            nn.Linear(32, classes),
        )


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block, with a 1x1 projection when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.shortcut(x))


class ResNetStyle(nn.Module):
    """Stem conv + BN + ReLU, overlapping 3x3/2 max-pool, two residual stages, GAP, Linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stage1 = BasicBlock(16, 16, 1)
        self.stage2 = BasicBlock(16, 32, 2)
        # A BatchNorm that is not right after a conv, so the exporter cannot fold it away.
        self.head_bn = nn.BatchNorm2d(32)
        self.head_relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.pool(self.stem(x))))
        x = self.gap(self.head_relu(self.head_bn(x)))
        return self.fc(torch.flatten(x, 1))


class AllCNNC(nn.Sequential):
    """All-CNN-C (Springenberg et al. 2014, table 2), with the widths 96/192 as parameters.

    Max-pooling is replaced by stride-2 convs; the 3x3 conv after the second one is
    unpadded (8x8 -> 6x6 on a 32x32 input); the class scores are a ReLU'd 1x1 conv,
    averaged over the map.
    """

    def __init__(self, classes: int = 10, narrow: int = 96, wide: int = 192) -> None:
        super().__init__(
            conv_relu(3, narrow),
            conv_relu(narrow, narrow),
            conv_relu(narrow, narrow, stride=2),
            conv_relu(narrow, wide),
            conv_relu(wide, wide),
            conv_relu(wide, wide, stride=2),
            conv_relu(wide, wide, pad=0),
            conv_relu(wide, wide, kernel=1, pad=0),
            conv_relu(wide, classes, kernel=1, pad=0),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


class SquareFC(nn.Sequential):
    """A strided conv stem, then a classifier whose hidden Linear is square (32 x 32).

    VGG's and AlexNet's fc7 are square (4096 x 4096): the weight is read by the forward
    Gemm (transB=1) and by its backward MatMul untransposed, which is where a runtime that
    caches one packed copy per weight goes wrong (OpenVINO 2026.4 CPU did).
    """

    def __init__(self, classes: int = 10, size: int = 32) -> None:
        side = size // 4
        super().__init__(
            conv_relu(3, 8, stride=2),
            conv_relu(8, 8, stride=2),
            nn.Flatten(),
            nn.Linear(8 * side * side, 32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.ReLU(),
            nn.Linear(32, classes),
        )


def randomise_batchnorm(net: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so eval mode is not an identity."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=generator))


def export_onnx(
    net: nn.Module, example: torch.Tensor, softmax: bool = True, opset: int = 17
) -> onnx.ModelProto:
    """`net` (in eval mode) as ONNX with a dynamic batch axis, optionally ending in Softmax.

    With `softmax`, the explain model's default explained output must be the logits.
    """
    wrapped = nn.Sequential(net, nn.Softmax(dim=1)) if softmax else net
    # The exporter restores the training flag of the module it is given, recursively: a
    # fresh Sequential is in training mode, and would leave `net` there after the export.
    wrapped.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but, unlike the dynamo one, needs no
        # onnxscript and keeps a plain dynamic batch axis.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapped,
            (example,),
            buffer,  # type: ignore[arg-type]  # the stubs omit file objects, which work
            dynamo=False,
            input_names=["image"],
            output_names=["probs" if softmax else "logits"],
            dynamic_axes={"image": {0: "batch"}, "probs" if softmax else "logits": {0: "batch"}},
            opset_version=opset,
        )
    return onnx.load_from_string(buffer.getvalue())


# ---------------------------------------------------------------- ONNX ops as torch ops
#
# The ops of the onnx package's light models as of their opset (9), as torch functions:
# tests/helpers/lightzoo.py runs the graph with them to calibrate BatchNorm statistics on an image.
# (The oracles are onnx2torch's and Captum's: tests/helpers/oracle.py.)


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pad(x: torch.Tensor, pads: list[int], value: float = 0.0) -> torch.Tensor:
    # ONNX pads are [h_begin, w_begin, h_end, w_end]; F.pad wants (w_b, w_e, h_b, h_e).
    if not any(pads):
        return x
    return F.pad(x, (pads[1], pads[3], pads[0], pads[2]), value=value)


def _conv(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, **a: Any
) -> torch.Tensor:
    x = _pad(x, a.get("pads", [0, 0, 0, 0]))
    return F.conv2d(x, w, b, a.get("strides", 1), 0, a.get("dilations", 1), a.get("group", 1))


def _max_pool(x: torch.Tensor, **a: Any) -> torch.Tensor:
    x = _pad(x, a.get("pads", [0, 0, 0, 0]), float("-inf"))
    return F.max_pool2d(
        x, a["kernel_shape"], a.get("strides", 1), ceil_mode=bool(a.get("ceil_mode"))
    )


def _average_pool(x: torch.Tensor, **a: Any) -> torch.Tensor:
    # count_include_pad=0 (the default): divide each window's sum by its real entries.
    pads, kernel, strides = a.get("pads", [0, 0, 0, 0]), a["kernel_shape"], a.get("strides", 1)
    total = F.avg_pool2d(_pad(x, pads), kernel, strides)
    count = F.avg_pool2d(_pad(torch.ones_like(x[:1, :1]), pads), kernel, strides)
    return total / count


def _batch_norm(x: torch.Tensor, *stats: torch.Tensor, **a: Any) -> torch.Tensor:
    scale, bias, mean, var = stats
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


def _lrn(x: torch.Tensor, **a: Any) -> torch.Tensor:
    alpha, beta, bias = a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0)
    return F.local_response_norm(x, a["size"], alpha, beta, bias)


def _gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, **at: Any) -> torch.Tensor:
    a = a.T if at.get("transA") else a
    b = b.T if at.get("transB") else b
    return at.get("alpha", 1.0) * (a @ b) + at.get("beta", 1.0) * c


def _reshape(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    dims = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def _unsqueeze(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    for axis in sorted(axes):
        x = x.unsqueeze(axis)
    return x


def _slice(x: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    starts, ends, axes, steps = (t.tolist() for t in inputs)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis] = slice(start, min(end, x.shape[axis]), step)
    return x[tuple(index)]


_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 11: torch.float64}

TORCH_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Conv": _conv,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda x: x.mean(dim=(2, 3), keepdim=True),
    "BatchNormalization": _batch_norm,
    "LRN": _lrn,
    "Gemm": _gemm,
    "MatMul": torch.matmul,
    "Reshape": _reshape,
    "Flatten": lambda x, axis=1: x.flatten(axis) if axis else x.reshape(1, -1),
    "Unsqueeze": _unsqueeze,
    "Transpose": lambda x, perm: x.permute(*perm),
    "Concat": lambda *xs, axis: torch.cat(xs, axis),
    "Add": torch.add,
    "Mul": torch.mul,
    "Div": torch.div,
    "Sum": lambda *xs: sum(xs[1:], xs[0]),
    "Clip": lambda x, low, high: torch.clamp(x, low, high),
    "HardSigmoid": lambda x, alpha, beta: torch.clamp(alpha * x + beta, 0.0, 1.0),
    "Dropout": lambda x, **_: x,
    "Identity": lambda x: x,
    "Shape": lambda x: torch.tensor(x.shape, dtype=torch.int64),
    "Cast": lambda x, to: x.to(_DTYPES[to]),
    "Slice": _slice,
    "Constant": lambda value: torch.from_numpy(numpy_helper.to_array(value).copy()),
}
