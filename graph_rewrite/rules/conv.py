"""Convolutions. The input gradient of a Conv is the transposed conv with the same weight.

It takes one of four forms (`conv_input_gradient`):
- stride 1, constant weights: a plain Conv with the weights flipped in space and in/out
  channels swapped (pads d·(k-1) - p), measured at about the cost of the forward conv,
  where ConvTranspose costs 1.0-1.7x;
- strided 2-D, constant weights, few input channels (an image stem): one stride-1 Conv
  over the output phases, then DepthToSpace (`conv_polyphase`);
- strided 2-D depthwise or narrow-grouped, constant weights (mobile nets, RegNets): dy
  spread onto the stride's grid, then a stride-1 grouped Conv (`conv_stuffed`);
- elsewhere ConvTranspose with the forward weight, its output padding chosen to give back
  the input's exact spatial size.
Results that are not a Conv's pass through `blocked_layout_anchor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..builder import Builder, Node
from ..errors import RewriteError
from .common import unshared_weight, upstream
from .conv_polyphase import FEW_CHANNELS, polyphase_input_grad
from .conv_stuffed import NARROW_GROUP, stuffed_input_grad
from .table import Grad, register


@dataclass(frozen=True)
class ConvGeometry:
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pads_begin: list[int]
    pads_end: list[int]
    group: int
    # auto_pad SAME_UPPER/SAME_LOWER whose pads depend on sizes known only at run time
    # (a strided axis of dynamic length); pads_begin and pads_end are then zeros and the
    # pads come from `same_pads_at_run_time`.
    same_at_run_time: str | None = None


def conv_geometry(
    g: Builder, node: Node, weight: str, data: str, run_time_same: bool = False
) -> ConvGeometry:
    """Kernel, strides, dilations and explicit pads of a Conv-like node (auto_pad resolved).

    SAME padding of an axis of dynamic length is still static at stride 1 (d·(k-1) in all),
    elsewhere it depends on the length: callers that can pad at run time pass
    `run_time_same` and get `same_at_run_time` set, the others a clear error.
    """
    w_shape = g.tensor(weight).shape
    kernel = node.attr("kernel_shape")
    if kernel is None:
        if w_shape is None or not all(isinstance(d, int) for d in w_shape[2:]):
            raise RewriteError(f"{node.op_type} {node.name!r}: the kernel size is unknown")
        kernel = list(w_shape[2:])
    nd = len(kernel)
    strides = list(node.attr("strides", [1] * nd))
    dilations = list(node.attr("dilations", [1] * nd))
    pads = list(node.attr("pads", [0] * (2 * nd)))
    auto_pad = node.attr("auto_pad", "NOTSET")
    same_at_run_time = None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        shape = g.tensor(data).shape
        spatial = list(shape[2:]) if shape is not None else [None] * nd
        pads = [0] * (2 * nd)
        for i in range(nd):
            size = spatial[i]
            if isinstance(size, int):
                out = -(-size // strides[i])
                reach = (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
                total = max(reach - size, 0)
            elif strides[i] == 1:
                total = (kernel[i] - 1) * dilations[i]
            elif run_time_same:
                same_at_run_time = auto_pad
                pads = [0] * (2 * nd)
                break
            else:
                raise RewriteError(
                    f"{node.op_type} {node.name!r}: auto_pad={auto_pad} at stride "
                    f"{strides[i]} needs static spatial sizes"
                )
            small, large = total // 2, total - total // 2
            pads[i], pads[nd + i] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    return ConvGeometry(
        [int(k) for k in kernel],
        strides,
        dilations,
        pads[:nd],
        pads[nd:],
        int(node.attr("group", 1)),
        same_at_run_time,
    )


def same_pads_at_run_time(g: Builder, geo: ConvGeometry, data: str) -> tuple[str, str]:
    """auto_pad SAME_*'s begin and end pads per spatial axis, from `data`'s run-time size:
    out = ceil(n/s), total = max((out-1)·s + d·(k-1) + 1 - n, 0), split as the mode says."""
    nd = len(geo.kernel)
    n = spatial_size(g, data, nd)
    strides = g.ints(geo.strides)
    out = g.Div(g.Add(n, g.ints([s - 1 for s in geo.strides])), strides)
    reach = g.Add(
        g.Mul(g.Sub(out, g.ints([1] * nd)), strides),
        g.ints([d * (k - 1) + 1 for d, k in zip(geo.dilations, geo.kernel)]),
    )
    total = g.Max(g.Sub(reach, n), g.ints([0] * nd))
    small = g.Div(total, g.ints([2] * nd))
    large = g.Sub(total, small)
    return (small, large) if geo.same_at_run_time == "SAME_UPPER" else (large, small)


def spatial_size(g: Builder, x: str, nd: int) -> str:
    """The run-time sizes of `x`'s nd spatial axes, a 1-D int64 tensor."""
    return g.Slice(g.shape_of(x), g.ints([2]), g.ints([2 + nd]))


def transposed_conv_cropped(
    g: Builder, dy: str, weight: str, geo: ConvGeometry, begin: str, size: str
) -> str:
    """ConvTranspose(dy, weight) onto the whole padded input, then the input's own extent
    (`size`) cut out from `begin` (pads known at run time; 1-D tensors, one entry per axis).

    Output padding s-1 makes the transposed conv reach at least begin + n: the forward's
    out = floor((n + pads - reach)/s) + 1 windows then cover (out-1)·s + reach + s-1 ≥ n + pads.
    """
    nd = len(geo.kernel)
    attrs: dict[str, list[int] | int] = dict(
        strides=geo.strides, dilations=geo.dilations, group=geo.group
    )
    if any(s > 1 for s in geo.strides):
        attrs["output_padding"] = [s - 1 for s in geo.strides]
    full = g.ConvTranspose(dy, weight, **attrs)
    return g.Slice(full, begin, g.Add(begin, size), g.ints(list(range(2, 2 + nd))))


def flipped_transposed_weight(w: np.ndarray, group: int) -> np.ndarray:
    """[M, C/g, *k] → [C, M/g, *k] flipped in space: the weight of the adjoint conv."""
    m, cg = w.shape[:2]
    k = w.shape[2:]
    per_group = w.reshape(group, m // group, cg, *k)
    swapped = np.swapaxes(per_group, 1, 2).reshape(group * cg, m // group, *k)
    return np.ascontiguousarray(np.flip(swapped, axis=tuple(range(2, 2 + len(k)))))


def transposed_conv_to_size(
    g: Builder, dy: str, weight: str, geo: ConvGeometry, like: str, out_shape: str
) -> str:
    """ConvTranspose(dy, weight) cropped or padded to exactly the spatial size of `like`."""
    in_shape = g.tensor(like).shape
    out_static = g.tensor(out_shape).shape
    nd = len(geo.kernel)
    attrs = dict(
        strides=geo.strides,
        dilations=geo.dilations,
        group=geo.group,
        pads=geo.pads_begin + geo.pads_end,
    )
    sizes_known = (
        in_shape is not None
        and out_static is not None
        and all(isinstance(d, int) for d in in_shape[2:])
        and all(isinstance(d, int) for d in out_static[2:])
    )
    if sizes_known:
        assert in_shape is not None and out_static is not None
        padding = []
        for i in range(nd):
            produced = (
                geo.strides[i] * (int(out_static[2 + i]) - 1)  # type: ignore[arg-type]
                + geo.dilations[i] * (geo.kernel[i] - 1)
                + 1
                - geo.pads_begin[i]
                - geo.pads_end[i]
            )
            padding.append(int(in_shape[2 + i]) - produced)  # type: ignore[arg-type]
        if any(p != 0 for p in padding):
            attrs["output_padding"] = padding
        return g.ConvTranspose(dy, weight, **attrs)
    # Spatial sizes only known at run time: the largest output padding always covers the
    # input (floor division loses at most stride-1 rows), then crop to the input's size.
    attrs["output_padding"] = [s - 1 for s in geo.strides]
    full = g.ConvTranspose(dy, weight, **attrs)
    if all(s == 1 for s in geo.strides):
        return full
    axes = list(range(2, 2 + nd))
    ends = g.Slice(g.shape_of(like), g.ints([2]), g.ints([2 + nd]))
    return g.Slice(full, g.ints([0] * nd), ends, g.ints(axes))


def _phase_form(
    g: Builder, dy: str, weight: np.ndarray, geo: ConvGeometry, x: str, y: str
) -> str | None:
    """The polyphase input gradient where it pays (see conv_polyphase), else None."""
    x_shape, y_shape = g.tensor(x).static_from(1), g.tensor(y).static_from(1)
    if (
        x_shape is None
        or y_shape is None
        or len(geo.kernel) != 2
        or geo.group != 1
        or geo.dilations != [1, 1]
        or geo.strides[0] != geo.strides[1]
        or x_shape[0] >= FEW_CHANNELS
    ):
        return None
    return polyphase_input_grad(
        g, dy, weight, geo.strides[0], geo.pads_begin, list(x_shape[1:]), list(y_shape[1:])
    )


def _stuffed_form(
    g: Builder, dy: str, weight: np.ndarray, geo: ConvGeometry, x: str, y: str
) -> tuple[str, bool] | None:
    """The spread-then-Conv input gradient of a strided depthwise conv, or of a grouped one
    with at most NARROW_GROUP channels per group at strides up to 2 (see conv_stuffed),
    else None; with it, whether the result still needs `blocked_layout_anchor`."""
    x_shape, y_shape = g.tensor(x).static_from(1), g.tensor(y).static_from(1)
    if (
        x_shape is None
        or y_shape is None
        or len(geo.kernel) != 2
        or geo.group < 2
        or x_shape[0] != geo.group * weight.shape[1]
        or weight.dtype != np.float32  # where it was measured
    ):
        return None
    depthwise = weight.shape[:2] == (geo.group, 1)  # one output per channel
    narrow = max(weight.shape[0] // geo.group, weight.shape[1]) <= NARROW_GROUP
    if not (depthwise or (narrow and max(geo.strides) <= 2)):
        return None
    return stuffed_input_grad(
        g,
        dy,
        flipped_transposed_weight(weight, geo.group),
        geo.group,
        geo.strides,
        geo.dilations,
        geo.pads_begin,
        x_shape[1:],
        y_shape[1:],
    )


def blocked_layout_anchor(g: Builder, dx: str, like: str) -> str:
    """dx (shaped like forward tensor `like`) through an identity AveragePool (kernel 1).

    onnxruntime CPU runs convolutions in a blocked NCHWc layout and keeps Add, Sum, Mul
    and activations in it only when every input already is. That layout starts only at a
    Conv or a pool: a ConvTranspose or DepthToSpace result is plain NCHW, and without the
    anchor it drags every later Sum and mask product out of the blocked layout, with two
    reorders each (ResNet-50, guided: 37 reorders down to 10, explain/forward 2.86 → 2.65).
    An average over one element is an exact copy on any runtime, and a cheap one.
    """
    shape = g.tensor(like).static_from(1)
    if g.dtype_of(like) != np.float32 or shape is None or len(shape) != 3 or shape[0] % 8:
        return dx
    return g.AveragePool(dx, kernel_shape=[1, 1])


def conv_input_gradient(g: Builder, dy: str, w: str, geo: ConvGeometry, x: str, y: str) -> str:
    """dx of y = Conv(x, w) in the cheapest of the module's forms that applies."""
    if geo.same_at_run_time:
        begin, _ = same_pads_at_run_time(g, geo, x)
        size = spatial_size(g, x, len(geo.kernel))
        cropped = transposed_conv_cropped(g, dy, unshared_weight(g, w), geo, begin, size)
        return blocked_layout_anchor(g, cropped, x)
    weight = g.info.weight(w)
    pads_begin = [d * (k - 1) - p for d, k, p in zip(geo.dilations, geo.kernel, geo.pads_begin)]
    pads_end = [d * (k - 1) - p for d, k, p in zip(geo.dilations, geo.kernel, geo.pads_end)]
    if weight is not None and all(s == 1 for s in geo.strides) and min(pads_begin + pads_end) >= 0:
        return g.Conv(
            dy,
            g.const(flipped_transposed_weight(weight, geo.group), hint="w_adjoint"),
            dilations=geo.dilations,
            group=geo.group,
            pads=pads_begin + pads_end,
        )
    stuffed = None if weight is None else _stuffed_form(g, dy, weight, geo, x, y)
    if stuffed is not None:
        spread, sliced = stuffed
        return blocked_layout_anchor(g, spread, like=x) if sliced else spread
    dx = None if weight is None else _phase_form(g, dy, weight, geo, x, y)
    if dx is None:
        dx = transposed_conv_to_size(g, dy, unshared_weight(g, w), geo, x, y)
    return blocked_layout_anchor(g, dx, like=x)


@register("Conv")
def conv(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    dy = upstream(node, dys)
    x, w, b = node.input(0), node.input(1), node.input(2)
    if len(wants) > 1 and wants[1]:
        raise RewriteError(f"Conv {node.name!r}: weights computed from the input are not supported")
    geo = conv_geometry(g, node, w, x, run_time_same=True)
    dx = conv_input_gradient(g, dy, w, geo, x, node.outputs[0]) if wants[0] else None
    db: Grad = None
    if b and len(wants) > 2 and wants[2]:
        rank = g.tensor(node.outputs[0]).rank or (2 + len(geo.kernel))
        db = g.ReduceSum(dy, g.ints([0, *range(2, rank)]), keepdims=0)
    return [dx, None, db][: len(node.inputs)]


def _transpose_pads(
    g: Builder, node: Node, x: str, kernel: list[int], strides: list[int], dilations: list[int]
) -> list[int] | tuple[str, str]:
    """The explicit [begin..., end...] pads of a ConvTranspose, output_shape and auto_pad
    resolved as onnxruntime resolves them; (begin, end) tensors where they depend on an
    input length known only at run time (output_shape over a dynamic input)."""
    nd = len(kernel)
    output_shape = node.attr("output_shape")
    auto_pad = node.attr("auto_pad", "NOTSET")
    if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return [0] * (2 * nd) if auto_pad == "VALID" else list(node.attr("pads", [0] * (2 * nd)))
    in_shape = g.tensor(x).shape
    spatial = list(in_shape[2:]) if in_shape is not None else [None] * nd
    extra = list(node.attr("output_padding", [0] * nd))
    reach = [d * (k - 1) + 1 for d, k in zip(dilations, kernel)]
    if output_shape is None:
        # SAME: the output is n·s, so the total pad s·(n-1) + extra + reach - n·s does not
        # depend on n, known or not.
        totals = [e + r - s for e, r, s in zip(extra, reach, strides)]
    elif all(isinstance(d, int) for d in spatial):
        wanted = list(output_shape)[-nd:]
        totals = [
            s * (int(n) - 1) + e + r - w  # type: ignore[arg-type]
            for s, n, e, r, w in zip(strides, spatial, extra, reach, wanted)
        ]
    else:
        return _transpose_pads_at_run_time(g, node, x, strides, extra, reach, auto_pad)
    if min(totals) < 0:
        raise RewriteError(f"ConvTranspose {node.name!r}: output_shape exceeds the full output")
    pads = [0] * (2 * nd)
    for i, total in enumerate(totals):
        small, large = total // 2, total - total // 2
        pads[i], pads[nd + i] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    return pads


def _transpose_pads_at_run_time(
    g: Builder,
    node: Node,
    x: str,
    strides: list[int],
    extra: list[int],
    reach: list[int],
    auto_pad: str,
) -> tuple[str, str]:
    """output_shape over an input of dynamic length: total = s·(n-1) + extra + reach - wanted."""
    nd = len(strides)
    n = spatial_size(g, x, nd)
    wanted = list(node.attr("output_shape"))[-nd:]
    fixed = [e + r - s - w for e, r, s, w in zip(extra, reach, strides, wanted)]
    total = g.Add(g.Mul(n, g.ints(strides)), g.ints(fixed))
    small = g.Div(total, g.ints([2] * nd))
    large = g.Sub(total, small)
    return (small, large) if auto_pad == "SAME_UPPER" else (large, small)


@register("ConvTranspose")
def conv_transpose(
    g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]
) -> list[Grad]:
    """The adjoint of a transposed conv is the plain Conv with the same weight and geometry."""
    dy = upstream(node, dys)
    x, w, b = node.input(0), node.input(1), node.input(2)
    if len(wants) > 1 and wants[1]:
        raise RewriteError(
            f"ConvTranspose {node.name!r}: weights computed from the input are not supported"
        )
    w_shape = g.tensor(w).shape
    kernel = node.attr("kernel_shape")
    if kernel is None:
        if w_shape is None or not all(isinstance(d, int) for d in w_shape[2:]):
            raise RewriteError(f"ConvTranspose {node.name!r}: the kernel size is unknown")
        kernel = [int(d) for d in w_shape[2:]]  # type: ignore[arg-type]
    nd = len(kernel)
    strides = list(node.attr("strides", [1] * nd))
    dilations = list(node.attr("dilations", [1] * nd))
    pads = _transpose_pads(g, node, x, list(kernel), strides, dilations)
    # With output padding below the stride (onnxruntime refuses more), the Conv's output
    # has exactly the input's size.
    extra = list(node.attr("output_padding", [0] * nd))
    if any(p >= s for p, s in zip(extra, strides)) or (isinstance(pads, list) and min(pads) < 0):
        raise RewriteError(
            f"ConvTranspose {node.name!r}: output padding of a stride or more, or negative "
            "pads, are not supported"
        )
    dx: Grad = None
    if wants[0]:
        group = int(node.attr("group", 1))
        full = dy
        if isinstance(pads, tuple):
            # Pads known at run time: dy goes back into the full output, zeros where the
            # forward cropped, and a Conv without pads reads it.
            zeros = g.ints([0, 0])
            full = g.Pad(dy, g.Concat(zeros, pads[0], zeros, pads[1], axis=0))
            pads = [0] * (2 * nd)
        weight = unshared_weight(g, w)
        dx = g.Conv(full, weight, strides=strides, dilations=dilations, pads=pads, group=group)
    db: Grad = None
    if b and len(wants) > 2 and wants[2]:
        db = g.ReduceSum(dy, g.ints([0, *range(2, 2 + nd)]), keepdims=0)
    return [dx, None, db][: len(node.inputs)]
