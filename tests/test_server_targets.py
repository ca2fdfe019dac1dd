"""server/core/targets.py on its own: top-k order, ties, names, and probabilities (scipy's softmax
as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.server.core.errors import InvalidInput
from onnxplain.server.core.targets import resolve_names, row_stats, top_k_rows
from scipy.special import softmax


def test_top_k_rows_are_sample_major_best_first_ties_to_the_lower_class() -> None:
    scores = np.array([[0.1, 3.0, 3.0, -1.0], [5.0, 0.0, 1.0, 2.0]])
    samples, targets = top_k_rows(scores, 3)
    np.testing.assert_array_equal(samples, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(targets, [1, 2, 0, 0, 3, 2])


def test_probabilities_softmax_logits_but_keep_a_distribution() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 5)) * 4
    rows = np.array([0, 1, 2, 2]), np.array([4, 0, 1, 3])
    scores, p = row_stats(logits, *rows)
    np.testing.assert_allclose(scores, logits[rows])
    np.testing.assert_allclose(p, softmax(logits, axis=1)[rows], rtol=1e-12)
    probs = softmax(logits, axis=1)
    np.testing.assert_allclose(row_stats(probs, *rows)[1], probs[rows], rtol=1e-12)


def test_names_resolve_to_their_first_label_and_unknown_names_are_refused() -> None:
    assert resolve_names(["dog", "cat"], ["cat", "dog", "cat"], "m") == [1, 0]
    with pytest.raises(InvalidInput, match="no class named 'cow'"):
        resolve_names(["cow"], ["cat", "dog"], "m")
    with pytest.raises(InvalidInput, match="has no labels"):
        resolve_names(["cat"], [], "m")
