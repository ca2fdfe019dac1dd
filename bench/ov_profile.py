"""Where OpenVINO spends an inference: milliseconds per layer type, forward against explain.

OpenVINO fuses the ONNX graph into its own layers (a Conv with its bias and ReLU becomes one
"Convolution", a layout change is a "Reorder"), so the names are OpenVINO's, not ONNX's;
except "Reference", OpenVINO's slow generic kernel for an op it has no optimised one for,
which is shown with the ONNX op it runs.
"""

from __future__ import annotations

import numpy as np
import onnx
from engines import load


def layer_times(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, runs: int = 3
) -> dict[str, float]:
    """Milliseconds per layer type, the median over `runs` inferences after one warm-up."""
    # A "Reference" layer is an ONNX op OpenVINO has no optimised kernel for; name the op.
    op_types = {node.name: node.op_type for node in model.graph.node}
    engine = load("openvino", model, feeds, threads, profiling=True)
    engine.run()
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        engine.run()
        totals: dict[str, float] = {}
        for name, kind, ms in engine.profile():
            if kind == "Reference":
                kind = f"Reference ({op_types.get(name, '?')})"
            totals[kind] = totals.get(kind, 0.0) + ms
        for kind, ms in totals.items():
            samples.setdefault(kind, []).append(ms)
    return {kind: float(np.median(v + [0.0] * (runs - len(v)))) for kind, v in samples.items()}


def comparison(
    title: str, forward: dict[str, float], explain: dict[str, float], top: int = 8
) -> str:
    """A table of the `top` layer types of the explain model, slowest first."""
    total_f, total_e = sum(forward.values()), sum(explain.values())
    lines = [
        f"OpenVINO layer times, {title} (sum over layers: forward {total_f:.1f} ms, "
        f"explain {total_e:.1f} ms)",
        "| layer type | forward ms | explain ms | share of explain |",
        "|---|---|---|---|",
    ]
    for kind in sorted(explain, key=lambda k: -explain[k])[:top]:
        share = explain[kind] / total_e if total_e else 0.0
        lines.append(
            f"| {kind} | {forward.get(kind, 0.0):.1f} | {explain[kind]:.1f} | {share:.0%} |"
        )
    return "\n".join(lines)
