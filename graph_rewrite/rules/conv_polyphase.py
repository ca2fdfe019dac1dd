"""The input gradient of a strided 2-D conv as one stride-1 Conv over its output phases.

With stride s, input position n = s·a + r (phase r) receives only the kernel taps
k ≡ p + r (mod s). Each phase is then a small stride-1 correlation of dy with every s-th
tap, flipped; all s² phases together are one Conv whose output channels are
(phase row, phase column, channel), which DepthToSpace interleaves back onto the grid.

That beats ConvTranspose where the forward conv reads few channels and a large grid (an
image model's first conv: ResNet-50's 7x7/2 stem, 64→3 channels at 224x224, takes 2.6 ms
as ConvTranspose and 1.7 ms this way, DepthToSpace included, on 2 onnxruntime CPU threads).
With many channels the phases' zero taps and the interleave cost more than ConvTranspose
saves (measured on ResNet-50's 3x3/2 convs, whether as one Conv or one per phase), so the
conv rule asks for this form only below `FEW_CHANNELS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..builder import Builder

# The forward conv's input channels below which the phase form is chosen; onnxruntime's
# blocked conv also wants the phase Conv's output channels in blocks of 16.
FEW_CHANNELS = 16
_CHANNEL_BLOCK = 16


@dataclass(frozen=True)
class AxisPhases:
    """One spatial axis: per phase r its first tap, its tap count and its place in the
    shared kernel; and the pads and per-phase length of the one Conv over all phases."""

    first_tap: list[int]
    taps: list[int]
    offsets: list[int]  # where phase r's taps start in the shared kernel
    kernel: int  # the shared kernel length
    pad_begin: int
    pad_end: int
    length: int  # outputs per phase: ceil(input size / stride)


def axis_phases(kernel: int, stride: int, pad_begin: int, size: int, out_size: int) -> AxisPhases:
    """Phase r (inputs n = s·a + r) gets taps k = k_r + s·t and reads dy[a + q_r - t]."""
    first, taps, own_pads = [], [], []
    for r in range(stride):
        k_r = (pad_begin + r) % stride
        t_r = len(range(k_r, kernel, stride))
        q_r = (r + pad_begin - k_r) // stride
        first.append(k_r)
        taps.append(t_r)
        own_pads.append(t_r - 1 - q_r)  # as a correlation with the flipped taps
    pad = max(own_pads)
    offsets = [pad - own for own in own_pads]
    shared = max(o + t for o, t in zip(offsets, taps))
    length = -(-size // stride)
    # Output length out_size + pad + end - shared + 1 must equal `length`.
    end = length - out_size - pad + shared - 1
    return AxisPhases(first, taps, offsets, shared, pad, end, length)


def phase_weight(w: np.ndarray, stride: int, rows: AxisPhases, cols: AxisPhases) -> np.ndarray:
    """[M, C, kh, kw] forward weight → [s²·C (padded), M, KH, KW] weight of the phase Conv."""
    m, c = w.shape[:2]
    phases = stride * stride * c
    padded = -(-phases // _CHANNEL_BLOCK) * _CHANNEL_BLOCK
    out = np.zeros((padded, m, rows.kernel, cols.kernel), w.dtype)
    for r1 in range(stride):
        for r2 in range(stride):
            # Phase (r1, r2)'s taps: every s-th from its first, flipped, channels swapped.
            taps = w[:, :, rows.first_tap[r1] :: stride, cols.first_tap[r2] :: stride]
            taps = np.swapaxes(taps[:, :, ::-1, ::-1], 0, 1)
            base = (r1 * stride + r2) * c
            o1, o2 = rows.offsets[r1], cols.offsets[r2]
            out[base : base + c, :, o1 : o1 + taps.shape[2], o2 : o2 + taps.shape[3]] = taps
    return out


def polyphase_input_grad(
    g: Builder,
    dy: str,
    weight: np.ndarray,
    stride: int,
    pads_begin: list[int],
    in_size: list[int],
    out_size: list[int],
) -> str | None:
    """dx of Conv(x, weight, stride, pads) (2-D, group 1, no dilation); None if pads say no.

    `in_size`/`out_size` are x's and y's spatial sizes; the caller checks the rest.
    """
    rows = axis_phases(weight.shape[2], stride, pads_begin[0], in_size[0], out_size[0])
    cols = axis_phases(weight.shape[3], stride, pads_begin[1], in_size[1], out_size[1])
    if rows.pad_begin < 0 or cols.pad_begin < 0:
        return None  # pads past the kernel: leave it to ConvTranspose
    kernel = phase_weight(weight, stride, rows, cols)
    pads = [rows.pad_begin, cols.pad_begin, max(rows.pad_end, 0), max(cols.pad_end, 0)]
    phases = g.Conv(dy, g.const(kernel, hint="w_phases"), pads=pads)
    channels = stride * stride * weight.shape[1]
    if kernel.shape[0] != channels or rows.pad_end < 0 or cols.pad_end < 0:
        ends = [channels, rows.length, cols.length]
        phases = g.Slice(phases, g.ints([0, 0, 0]), g.ints(ends), g.ints([1, 2, 3]))
    dx = g.DepthToSpace(phases, blocksize=stride, mode="DCR")
    if stride * rows.length != in_size[0] or stride * cols.length != in_size[1]:
        dx = g.Slice(dx, g.ints([0, 0]), g.ints(in_size), g.ints([2, 3]))
    return dx
