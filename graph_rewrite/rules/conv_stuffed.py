"""The input gradient of a strided 2-D depthwise or narrow-grouped conv: dy spread onto the
stride's grid with zeros between, then one stride-1 grouped Conv with the adjoint kernel.

Per axis, with z[s·i] = dy[i] and zeros elsewhere (z has s·out entries),

    dx[n] = Σ_u w[u]·dy[i] over s·i + d·u - p = n  =  Σ_v w[k-1-v]·z[n - P + d·v],

a correlation of z with the flipped taps (and, per group, the in and out channels swapped),
dilation d, begin pad P = d·(k-1) - p; the end pad makes the output exactly x's size. The
spreading is a 1x1 depthwise ConvTranspose of stride s with unit weights (an exact copy).

Why not ConvTranspose with the forward kernel: onnxruntime CPU runs a grouped ConvTranspose
as one small GEMM and col2im per group, 1.3 ms for MobileNetV3-Large's 3x3/2 depthwise conv
of 64 channels at 112x112 on 2 threads, against 0.33 ms for the 1x1 spreading plus 0.32 ms
for the depthwise Conv, which runs in the blocked NCHWc layout (so no anchor after it
either). The stride-1 Conv does s² times the forward's multiply-adds. A depthwise conv,
bound by memory, hardly notices; a grouped one with few channels per group less than
ConvTranspose's per-group overhead costs: RegNetY's 3x3/2 convs of group width 16 (with a
depthwise conv before and after, as in the explain graph) took 2.0 against 2.9 ms at 64
channels and 112x112, 0.56 against 0.69 ms at 768 and 14x14; at width 32, 2.7 against 2.9;
at 64 it lost (3.9 against 3.0), and dense convs are left to ConvTranspose. The phase form
(conv_polyphase), which does no extra multiply-adds, loses here: onnxruntime's DepthToSpace
alone took 2.8 ms for the depthwise conv above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..builder import Builder

# Channels per group (in or out) up to which the stuffed form beats ConvTranspose at
# stride 2 (measured above); a depthwise conv takes it at any stride.
NARROW_GROUP = 32


def stuffed_input_grad(
    g: Builder,
    dy: str,
    adjoint: np.ndarray,
    group: int,
    strides: Sequence[int],
    dilations: Sequence[int],
    pads_begin: Sequence[int],
    in_size: Sequence[int],
    out_size: Sequence[int],
) -> tuple[str, bool] | None:
    """dx of a grouped Conv whose adjoint weight (flipped, channels swapped per group:
    [C, M/group, kh, kw]) is `adjoint`, and whether it ends in a Slice (not a Conv, so not in
    the blocked layout); None where a pad exceeds the kernel's reach (P < 0), left to
    ConvTranspose. Sizes are x's and y's spatial ones."""
    kernel = adjoint.shape[2:]
    begin = [d * (k - 1) - p for d, k, p in zip(dilations, kernel, pads_begin)]
    if min(begin) < 0:
        return None
    channels = adjoint.shape[1] * group  # dy's: M
    # The ConvTranspose's output length s·(out-1) + 1 + (s-1) = s·out.
    spread = g.ConvTranspose(
        dy,
        g.const(np.ones((channels, 1, 1, 1), adjoint.dtype), hint="w_spread_grid"),
        strides=list(strides),
        group=channels,
        output_padding=[s - 1 for s in strides],
    )
    # Conv output length s·out + P + E - d·(k-1) = n, so E = n - s·out + p.
    end = [n - s * o + p for n, s, o, p in zip(in_size, strides, out_size, pads_begin)]
    dx = g.Conv(
        spread,
        g.const(adjoint, hint="w_adjoint"),
        dilations=list(dilations),
        group=group,
        pads=begin + [max(e, 0) for e in end],
    )
    if min(end) >= 0:
        return dx, False
    # The grid reaches past x's end (s·out > n + p): cut back to x's size.
    return g.Slice(dx, g.ints([0, 0]), g.ints(list(in_size)), g.ints([2, 3])), True
