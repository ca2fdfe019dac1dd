"""Helpers that several rule families share."""

from __future__ import annotations

from ..builder import Builder


def unbroadcast(g: Builder, grad: str, operand: str, result: str) -> str:
    """Sums `grad` (shaped like the broadcast `result`) back to the shape of `operand`.

    Axes are chosen from static shapes: leading axes the operand lacks, and axes where
    the operand has size 1 and the result does not. A symbolic dimension is taken not to
    broadcast (a dynamic batch of 1 against a dynamic batch of N is not supported).
    """
    op_shape = g.tensor(operand).shape
    res_shape = g.tensor(result).shape
    if op_shape is None or res_shape is None:
        raise ValueError(f"broadcasting needs the ranks of {operand!r} and {result!r}")
    if tuple(op_shape) == tuple(res_shape):
        return grad
    lead = len(res_shape) - len(op_shape)
    axes = list(range(lead))
    for i, d in enumerate(op_shape):
        if d == 1 and res_shape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        grad = g.ReduceSum(grad, g.ints(axes), keepdims=1)
    if lead or not axes:
        grad = g.reshape_like(grad, operand)
    return grad
