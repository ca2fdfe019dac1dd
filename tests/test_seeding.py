"""The seeded explain model (graph_rewrite/seeding.py) against the output_grad one.

The oracle is the unseeded explain model fed numpy's one-hot of numpy's argmax (or of the
given target): one run of the seeded model must give exactly what that pair of steps gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import (
    GRAD_INPUT,
    SALIENCY_OUTPUT,
    RewriteError,
    build_explain_model,
    default_output,
)
from onnxplain.graph_rewrite.seeding import TARGETS_INPUT, TARGETS_OUTPUT, seed_from_targets

from helpers.fd import session

DEMO = Path(__file__).resolve().parents[1] / "models" / "digits"
SAMPLES = sorted((DEMO / "samples").glob("*.npy"))


@pytest.mark.parametrize("method", ["vanilla", "guided"])
@pytest.mark.parametrize("target", ["onnxruntime", "portable"])
def test_seeded_model_equals_output_grad_model_fed_a_one_hot(method: str, target: str) -> None:
    model = onnx.load(DEMO / "model.onnx")
    out = default_output(model)
    plain = build_explain_model(model, method, target=target)  # type: ignore[arg-type]
    seeded = seed_from_targets(build_explain_model(model, method, target=target), out)  # type: ignore[arg-type]
    onnx.checker.check_model(seeded, full_check=True)
    assert GRAD_INPUT not in {i.name for i in seeded.graph.input}
    x = np.concatenate([np.load(p) for p in SAMPLES])
    (scores,) = session(model).run([out], {"input": x})
    # -1: the sample's top class; the others given, one of them the top class anyway.
    asked = np.array([-1, 2, -1, 9, int(scores[4].argmax())], dtype=np.int64)
    got_scores, saliency, explained = session(seeded).run(
        [out, SALIENCY_OUTPUT, TARGETS_OUTPUT], {"input": x, TARGETS_INPUT: asked}
    )
    wanted = np.where(asked < 0, scores.argmax(axis=1), asked)
    np.testing.assert_array_equal(explained, wanted)
    seed = np.eye(scores.shape[1], dtype=np.float32)[wanted]
    (expected,) = session(plain).run([SALIENCY_OUTPUT], {"input": x, GRAD_INPUT: seed})
    np.testing.assert_array_equal(saliency, expected)
    np.testing.assert_array_equal(got_scores, scores)


def test_seeding_needs_the_output_grad_input_and_fresh_names() -> None:
    model = onnx.load(DEMO / "model.onnx")
    out = default_output(model)
    with pytest.raises(RewriteError, match="no input 'output_grad'"):
        seed_from_targets(model, out)
    explain = build_explain_model(model, "guided")
    with pytest.raises(RewriteError, match="no tensor named 'nope'"):
        seed_from_targets(explain, "nope")
    seeded = seed_from_targets(explain, out)
    with pytest.raises(RewriteError, match="no input 'output_grad'"):
        seed_from_targets(seeded, out)


def test_convert_seed_from_targets_writes_a_model_that_seeds_itself(tmp_path: Path) -> None:
    from onnxplain.cli import main

    out = tmp_path / "seeded.onnx"
    assert (
        main(["convert", str(DEMO / "model.onnx"), "-o", str(out), "--seed-from", "targets"]) == 0
    )
    names = session(onnx.load(out))
    assert [i.name for i in names.get_inputs()] == ["input", TARGETS_INPUT]
    assert TARGETS_OUTPUT in [o.name for o in names.get_outputs()]
