"""Gemm and MatMul: the gradient of a product is a product with the other operand transposed.

Gemm's backward is one Gemm whose transA/transB flags do the transposing: no Transpose node
on the hot path. On the onnxruntime target it reads the forward weight itself, with no second
copy (VGG-19's first fully connected layer alone is 411 MB); the portable target gives it a
copy, as OpenVINO computes a Gemm wrong that shares its weight with the forward one. MatMul
has no such flags, so a constant operand's transpose is folded into a new constant there
(N-D MatMuls carry small weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..builder import Builder, Node
from ..errors import RewriteError
from .common import known_rank, sum_to, unbroadcast, unshared_weight, upstream
from .table import Grad, register


@register("Gemm")
def gemm(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """Y = alpha·A'·B' + beta·C with A' = A or Aᵀ, B' = B or Bᵀ (transA, transB)."""
    dy = upstream(node, dys)
    a, b, c = node.input(0), node.input(1), node.input(2)
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    # The backward's own copy of a constant weight on the portable target (OpenVINO).
    b_back = unshared_weight(g, b) if wants[0] else b
    a_back = unshared_weight(g, a) if wants[1] else a
    da: Grad = None
    if wants[0]:
        # dA' = alpha·dY·B'ᵀ, and dA = dA'ᵀ = alpha·B'·dYᵀ when A is transposed.
        if trans_a:
            da = _product(g, alpha, (b_back, trans_b), (dy, 1))
        else:
            da = _product(g, alpha, (dy, 0), (b_back, 1 - trans_b))
    db: Grad = None
    if wants[1]:
        # dB' = alpha·A'ᵀ·dY, and dB = dB'ᵀ = alpha·dYᵀ·A' when B is transposed.
        if trans_b:
            db = _product(g, alpha, (dy, 1), (a_back, trans_a))
        else:
            db = _product(g, alpha, (a_back, 1 - trans_a), (dy, 0))
    dc: Grad = None
    if c and len(wants) > 2 and wants[2]:
        scaled = dy if beta == 1.0 else g.Mul(dy, g.scalar_like(beta, dy))
        dc = unbroadcast(g, scaled, c, node.outputs[0])
    return [da, db, dc][: len(node.inputs)]


def _product(g: Builder, alpha: float, left: tuple[str, int], right: tuple[str, int]) -> str:
    """alpha·op(left)·op(right), op transposing where the flag is 1: one MatMul or Gemm."""
    (l_name, l_trans), (r_name, r_trans) = left, right
    if alpha == 1.0 and not l_trans and not r_trans:
        return g.MatMul(l_name, r_name)
    return g.Gemm(l_name, r_name, transA=l_trans, transB=r_trans, alpha=alpha)


@register("MatMul")
def matmul(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """numpy matmul semantics: batch axes broadcast, 1-D operands gain then lose an axis."""
    dy = upstream(node, dys)
    a, b = node.inputs
    rank_a, rank_b = known_rank(g, node, a), known_rank(g, node, b)
    # Give dY the axes the 1-D operands dropped, so it is [..., M, N] in every case.
    if rank_b == 1:
        dy = g.Unsqueeze(dy, g.ints([-1]))
    if rank_a == 1:
        dy = g.Unsqueeze(dy, g.ints([-2]))
    da = _matmul_operand_grad(g, node, dy, a, b, left=True) if wants[0] else None
    db = _matmul_operand_grad(g, node, dy, b, a, left=False) if wants[1] else None
    return [da, db]


def _matmul_operand_grad(
    g: Builder, node: Node, dy: str, operand: str, other: str, left: bool
) -> str:
    """dA = dY·Bᵀ (left) or dB = Aᵀ·dY, summed over broadcast batch axes."""
    other_t = _transposed(g, node, other, as_left=not left)
    grad = g.MatMul(dy, other_t) if left else g.MatMul(other_t, dy)
    return _sum_to_operand(g, node, grad, operand, other, left)


def _transposed(g: Builder, node: Node, name: str, as_left: bool) -> str:
    """`name` with its last two axes swapped; a 1-D vector is first made [1, K] or [K, 1]."""
    value = g.info.constant(name)
    if value is not None:
        if value.ndim == 1:
            value = value.reshape((1, -1) if as_left else (-1, 1))
        return g.const(np.ascontiguousarray(np.swapaxes(value, -1, -2)), hint="transposed")
    rank = known_rank(g, node, name)
    if rank == 1:
        # [K] as the left operand is [1, K] (transposed: [K, 1]); as the right, [K, 1] → [1, K].
        return g.Unsqueeze(name, g.ints([-1 if as_left else 0]))
    perm = [*range(rank - 2), rank - 1, rank - 2]
    return g.Transpose(name, perm=perm)


def _sum_to_operand(g: Builder, node: Node, grad: str, operand: str, other: str, left: bool) -> str:
    """Sums the batch axes that `operand` was broadcast along, then drops 1-D padding."""
    op_shape = g.tensor(operand).shape
    other_shape = g.tensor(other).shape
    assert op_shape is not None and other_shape is not None  # ranks checked by the caller
    matrix = list(op_shape) if len(op_shape) >= 2 else ([1, *op_shape] if left else [*op_shape, 1])
    batch = _broadcast_batch(list(op_shape[:-2]), list(other_shape[:-2]))
    grad_shape = [*batch, *matrix[-2:]]
    if len(op_shape) == 1:
        # Sum the batch axes away first; then [1, K] / [K, 1] is reshaped to [K].
        if batch:
            grad = g.ReduceSum(grad, g.ints(list(range(len(batch)))), keepdims=0)
        return g.reshape_like(grad, operand)
    return sum_to(g, grad, grad_shape, operand)


def _broadcast_batch(x: list, y: list) -> list:
    """The broadcast of two batch shapes (numpy rules; a symbolic dim wins over 1)."""
    n = max(len(x), len(y))
    x = [1] * (n - len(x)) + x
    y = [1] * (n - len(y)) + y
    return [b if a == 1 else a for a, b in zip(x, y)]


_ELLIPSIS = "..."


def _einsum_tokens(term: str) -> list[str]:
    """A term's axes, one token each: a letter, or the ellipsis as one token."""
    head, dots, tail = term.partition(_ELLIPSIS)
    return [*head, *([_ELLIPSIS] if dots else []), *tail]


def _einsum_terms(node: Node) -> tuple[list[list[str]], list[str]]:
    equation = str(node.attr("equation", "")).replace(" ", "")
    given, arrow, result = equation.partition("->")
    terms = [_einsum_tokens(t) for t in given.split(",")]
    if not arrow:  # implicit output: the letters seen once, in alphabetical order
        letters = [t for term in terms for t in term if t != _ELLIPSIS]
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        has_dots = any(_ELLIPSIS in term for term in terms)
        return terms, [*([_ELLIPSIS] if has_dots else []), *once]
    return terms, _einsum_tokens(result)


@register("Einsum")
def einsum(g: Builder, node: Node, dys: Sequence[Grad], wants: Sequence[bool]) -> list[Grad]:
    """The gradient of one operand is an Einsum of the upstream gradient with the others,
    back to that operand's axes; axes summed over that operand alone are spread back.

    Refused: an axis repeated within one term (a diagonal) and an ellipsis that may
    broadcast (its axes' sizes not known to be the output's)."""
    dy = upstream(node, dys)
    terms, out = _einsum_terms(node)
    grads: list[Grad] = []
    for k, operand in enumerate(node.inputs):
        if not wants[k]:
            grads.append(None)
            continue
        term = terms[k]
        letters = [t for t in term if t != _ELLIPSIS]
        if len(set(letters)) != len(letters):
            raise RewriteError(
                f"Einsum {node.name!r}: operand {k} repeats an axis ({''.join(term)}, a "
                "diagonal); not supported"
            )
        if _ELLIPSIS in term:
            _check_ellipsis_not_broadcast(g, node, operand, term, out)
        others = [t for j, t in enumerate(terms) if j != k]
        available = set(out).union(*others) if others else set(out)
        kept = [t for t in term if t in available]
        equation = ",".join("".join(t) for t in [out, *others]) + "->" + "".join(kept)
        inputs = [dy, *(name for j, name in enumerate(node.inputs) if j != k)]
        grad = g.Einsum(*inputs, equation=equation)
        spread = [i for i, t in enumerate(term) if t not in available]
        if spread:
            grad = g.Expand(g.Unsqueeze(grad, g.ints(spread)), g.shape_of(operand))
        grads.append(grad)
    return grads


def _check_ellipsis_not_broadcast(
    g: Builder, node: Node, operand: str, term: list[str], out: list[str]
) -> None:
    """The operand's ellipsis axes must be the output's: where they broadcast, its
    gradient would need summing over them, which a static shape must show is not needed."""
    op_shape, out_shape = g.tensor(operand).shape, g.tensor(node.outputs[0]).shape
    if _ELLIPSIS in out and op_shape is not None and out_shape is not None:
        i, j = term.index(_ELLIPSIS), out.index(_ELLIPSIS)
        n_op = len(op_shape) - (len(term) - 1)
        n_out = len(out_shape) - (len(out) - 1)
        mine, theirs = op_shape[i : i + n_op], out_shape[j : j + n_out]
        # Equal sizes, or the same symbolic name: no axis broadcasts.
        if n_op == n_out and all(a is not None and a == b for a, b in zip(mine, theirs)):
            return
    raise RewriteError(
        f"Einsum {node.name!r}: the ellipsis of operand {''.join(term)} may broadcast "
        "(its axes are not known to equal the output's); not supported"
    )
