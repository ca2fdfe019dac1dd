"""The model parameter randomisation test: maps of each cascade step against the original's.

For each method the explain model is rebuilt from every randomised copy (the backward pass
holds derived copies of the weights, such as flipped kernels, so swapping initializers in
one explain model would not do) and run on the same inputs and the same targets: the
original model's top classes unless given, as the paper explains the original prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnxplain.graph_rewrite import (
    GRAD_INPUT,
    SALIENCY_OUTPUT,
    Method,
    build_explain_model,
    default_input,
    default_output,
)

from .cascade import Draw, cascade, parameter_layers, reinit_draw
from .report import SCORES, MethodResult, SanityReport, Step, summarise
from .similarity import METRICS, similarities


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _saliency(
    model: onnx.ModelProto, method: Method, ends: tuple[str, str], x: np.ndarray, seed: np.ndarray
) -> np.ndarray:
    explain = build_explain_model(model, method, ends[0], ends[1])
    feeds = {ends[0]: x, GRAD_INPUT: seed}
    return np.asarray(_session(explain).run([SALIENCY_OUTPUT], feeds)[0])


# Called with (method, depth, saliency) for the original (depth 0) and every cascade step.
OnMaps = Callable[[str, int, np.ndarray], None]


def _mean_similarities(original: np.ndarray, other: np.ndarray) -> dict[str, float]:
    per_sample = [similarities(a, b) for a, b in zip(original, other)]
    return {m: float(np.mean([s[m] for s in per_sample])) for m in METRICS}


def run_sanity(
    model: onnx.ModelProto,
    x: np.ndarray,
    methods: Sequence[Method],
    targets: Sequence[int] | None = None,
    draw: Draw | None = None,
    metric: str = "spearman_abs",
    max_similarity: float = 0.5,
    score: str = "mean",
    name: str = "",
    input_name: str | None = None,
    output_name: str | None = None,
    on_maps: OnMaps | None = None,
) -> SanityReport:
    """Cascading randomisation of `model`'s weights; each method's maps compared at each step.

    A method passes when its `score` of `metric` is at most `max_similarity`: its maps
    then depend on the weights, as an explanation must.
    `score` "mean" averages each measure over the cascade's steps (Quantus's
    return_average_correlation), "last" takes the fully randomised model's.
    `draw` re-draws one initializer (default: reinit_draw(0)); `on_maps` sees every map.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    if score not in SCORES:
        raise ValueError(f"score {score!r} is not one of {SCORES}")
    ends = (input_name or default_input(model), output_name or default_output(model))
    x = np.ascontiguousarray(x, dtype=np.float32)
    scores = np.asarray(_session(model).run([ends[1]], {ends[0]: x})[0])
    if scores.ndim != 2:
        raise ValueError(f"the explained output has shape {scores.shape}; need [batch, classes]")
    chosen = scores.argmax(axis=1) if targets is None else np.asarray(targets, np.int64)
    if chosen.shape != (len(x),):
        raise ValueError(f"give one target per sample ({len(x)}), got {len(chosen)}")
    # One-hot rows: the class whose score is explained, kept fixed through the cascade.
    seed = np.zeros(scores.shape, np.float32)
    seed[np.arange(len(x)), chosen] = 1.0
    originals = {m: _saliency(model, m, ends, x, seed) for m in methods}
    if on_maps is not None:
        for method, original in originals.items():
            on_maps(method, 0, original)
    steps: dict[str, list[Step]] = {m: [] for m in methods}
    layers = parameter_layers(model)
    for depth, (layer, randomised) in enumerate(cascade(model, draw or reinit_draw(0), layers)):
        for method in methods:
            maps = _saliency(randomised, method, ends, x, seed)
            if on_maps is not None:
                on_maps(method, depth + 1, maps)
            sims = _mean_similarities(originals[method], maps)
            steps[method].append(Step(layer.name, depth + 1, sims))
    results = [
        MethodResult(m, steps[m], summarise(steps[m], score)[metric] <= max_similarity)
        for m in methods
    ]
    targets_list = [int(t) for t in chosen]
    return SanityReport(name, metric, max_similarity, score, len(x), targets_list, results)
