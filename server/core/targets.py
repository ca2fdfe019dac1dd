"""Which classes a request explains: names resolved to indices, each sample's top k, and the
score and probability of every explained class.

A response has one row per explained (sample, class): one per sample, or k per sample for
top-k, sample by sample, best class first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import InvalidInput, RequestTooLarge

# Top-k beyond this explains more classes than any map reader looks at, at k times the cost.
MAX_TOP_K = 20


def resolve_names(names: Sequence[str], labels: Sequence[str], model: str) -> list[int]:
    """Class indices for class names, as listed in the model's labels file."""
    if not labels:
        raise InvalidInput(f"model {model!r} has no labels; give targets as class indices")
    index = {label: i for i, label in reversed(list(enumerate(labels)))}
    missing = [n for n in names if n not in index]
    if missing:
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise InvalidInput(f"no class named {missing[0]!r} in model {model!r}; labels: {shown}")
    return [index[n] for n in names]


def check_top_k(k: int, classes: int, explicit_targets: bool) -> None:
    if explicit_targets:
        raise InvalidInput("give either targets (or target names) or top_k, not both")
    if not 1 <= k <= min(MAX_TOP_K, classes):
        raise InvalidInput(f"top_k is {k}; it must be between 1 and {min(MAX_TOP_K, classes)}")


def top_k_rows(flat_scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample, class) of each row: every sample's k best classes, best first.

    Ties keep the lower class first (a stable sort), as argmax picks the first maximum.
    """
    order = np.argsort(-flat_scores, axis=1, kind="stable")[:, :k]
    samples = np.repeat(np.arange(flat_scores.shape[0], dtype=np.int64), k)
    return samples, order.reshape(-1).astype(np.int64)


def row_stats(
    flat_scores: np.ndarray, samples: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's score and its probability, float64.

    The probability is the softmax of the sample's scores, unless the scores already are a
    distribution (non-negative, each sample summing to 1: a config whose explained output
    is a Softmax's), which a second softmax would flatten.
    """
    scores = flat_scores.astype(np.float64)
    if (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return scores[samples, targets], scores[samples, targets]
    shifted = scores - scores.max(axis=1, keepdims=True)  # exp cannot overflow
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return scores[samples, targets], probabilities[samples, targets]


# One explain run of rows: (x_rows, targets) → (scores, saliency, explained classes).
ExplainRows = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def explain_top_k(
    k: int,
    x: np.ndarray,
    given: Sequence[int],
    max_batch: int,
    fixed_batch: int | None,
    explain: ExplainRows,
    top_class: int,
    classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores, samples, targets, saliency) for each sample's k best classes.

    No forward run of its own: a first explain run seeds each sample with its top class
    (`top_class`, the graph picks it), and its scores rank the other classes, which one
    more explain run takes together (a model with a fixed batch of 1 gets one run per
    row). The class a sample's first row explains is the one the graph picked, so a tie
    cannot pair a map with another class than the one reported.
    """
    # Before any run, what the scores are not needed for (`classes`: where known ahead).
    check_top_k(k, MAX_TOP_K if classes is None else classes, bool(given))
    if len(x) * k > max_batch:
        raise RequestTooLarge(
            f"top_k {k} of {len(x)} samples is {len(x) * k} rows; this server allows {max_batch}"
        )
    if fixed_batch is not None and fixed_batch != 1 and k > 1:
        raise InvalidInput(f"top_k needs a model whose batch is dynamic or 1, not {fixed_batch}")
    scores, first, best = explain(x, np.full(len(x), top_class, dtype=np.int64))
    flat = scores.reshape(scores.shape[0], -1)
    check_top_k(k, flat.shape[1], False)
    ranked = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    others = np.stack([row[row != b][: k - 1] for row, b in zip(ranked, best)])
    targets = np.concatenate([best[:, None], others], axis=1).reshape(-1).astype(np.int64)
    samples = np.repeat(np.arange(len(x), dtype=np.int64), k)
    if k == 1:
        return scores, samples, targets, first
    rest = others.reshape(-1).astype(np.int64)
    rest_samples = np.repeat(np.arange(len(x), dtype=np.int64), k - 1)
    if fixed_batch is None:
        more = explain(x[rest_samples], rest)[1]
    else:
        rows = [explain(x[[s]], rest[[i]])[1] for i, s in enumerate(rest_samples)]
        more = np.concatenate(rows)
    saliency = np.concatenate(
        [first[:, None], more.reshape(len(x), k - 1, *more.shape[1:])], axis=1
    ).reshape(len(x) * k, *first.shape[1:])
    return scores, samples, targets, saliency
