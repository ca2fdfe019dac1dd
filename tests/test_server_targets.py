"""server/core/targets.py on its own: top-k order, ties, names, and probabilities (scipy's softmax
as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.server.core.errors import InvalidInput, RequestTooLarge
from onnxplain.server.core.targets import explain_top_k, resolve_names, row_stats, top_k_rows
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


class _LinearExplainer:
    """A linear model scores = x @ w, explained as a graph would: a target of -1 is the
    row's argmax (the first maximum), and a row's gradient is its target's column of w.
    It records the rows of every run, so a test sees that no forward run is needed."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w
        self.runs: list[int] = []

    def __call__(
        self, x: np.ndarray, targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.runs.append(len(x))
        scores = x @ self.w
        explained = np.where(targets < 0, scores.argmax(axis=1), targets)
        return scores, self.w.T[explained], explained


@pytest.mark.parametrize("fixed_batch", [None, 1])
def test_top_k_reuses_the_first_explain_runs_scores_and_pairs_each_map_with_its_class(
    fixed_batch: int | None,
) -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 5))
    x = rng.normal(size=(1 if fixed_batch else 3, 6))
    model = _LinearExplainer(w)
    scores, samples, targets, saliency = explain_top_k(3, x, [], 32, fixed_batch, model, -1)
    np.testing.assert_allclose(scores, x @ w)
    want_samples, want_targets = top_k_rows(x @ w, 3)
    np.testing.assert_array_equal(samples, want_samples)
    np.testing.assert_array_equal(targets, want_targets)
    np.testing.assert_allclose(saliency, w.T[want_targets])  # d score_t / dx = w[:, t]
    # The top class's map comes with the scores; the other classes take one more run.
    assert model.runs == ([len(x), 2 * len(x)] if fixed_batch is None else [1, 1, 1])


def test_top_1_is_one_explain_run_and_a_tie_keeps_the_class_the_graph_picked() -> None:
    w = np.array([[1.0, 1.0, 0.0]])  # classes 0 and 1 tie for every x > 0
    model = _LinearExplainer(w)
    _, _, targets, saliency = explain_top_k(2, np.ones((2, 1)), [], 8, None, model, -1)
    np.testing.assert_array_equal(targets, [0, 1, 0, 1])
    np.testing.assert_allclose(saliency, w.T[[0, 1, 0, 1]])
    model.runs.clear()
    _, _, targets, _ = explain_top_k(1, np.ones((2, 1)), [], 8, None, model, -1)
    assert model.runs == [2] and list(targets) == [0, 0]


def test_top_k_refuses_before_running_what_it_can() -> None:
    model = _LinearExplainer(np.eye(4))
    with pytest.raises(InvalidInput, match="not both"):
        explain_top_k(2, np.ones((1, 4)), [1], 8, None, model, -1)
    with pytest.raises(InvalidInput, match="between 1 and 4"):
        explain_top_k(5, np.ones((1, 4)), [], 8, None, model, -1, classes=4)
    with pytest.raises(RequestTooLarge, match="6 rows"):
        explain_top_k(3, np.ones((2, 4)), [], 4, None, model, -1)
    with pytest.raises(InvalidInput, match="dynamic or 1"):
        explain_top_k(2, np.ones((2, 4)), [], 8, 2, model, -1)
    assert model.runs == []
    with pytest.raises(InvalidInput, match="between 1 and 4"):  # classes known from a run
        explain_top_k(5, np.ones((1, 4)), [], 8, None, model, -1)
