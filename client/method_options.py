"""`onnxplain explain`'s method options, and what it prints about a method's outputs.

Any method's parameters go as `--param NAME=VALUE`, parsed by the type the server lists
for them (GetModel), so a method this client has never heard of is served as well. The
flags kept from before (--steps, --layer, ...) are spellings of the same parameters; their
choices come from this install's method registry.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from onnxplain.graph_rewrite.methods import REGISTRY, method_names

from .client import Explanation, MethodParam, ModelSummary

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
# Printed on their own lines by method_report; other outputs as "name: value".
_REPORTED = ("layer", "seed", "completeness_gap")


def _choices(name: str) -> tuple[str, ...] | None:
    """The registry's choices for the parameter `name` (every method that takes it)."""
    params = [p for spec in REGISTRY.values() for p in spec.params if p.name == name]
    found = [str(c) for p in params for c in p.choices or ()]
    return tuple(dict.fromkeys(found)) or None


def add_method_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("method options (`onnxplain models` lists each method's)")
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the method, repeatable, typed as `onnxplain models` lists it "
        "(a tensor: a .npy file)",
    )
    group.add_argument("--layer", help="the layer, for a method that takes one")
    group.add_argument("--cam-style", choices=_choices("cam_style"), default=None)
    group.add_argument(
        "--gradient",
        choices=_choices("gradient"),
        default=None,
        help="the gradient method a batch method averages or integrates",
    )
    group.add_argument("--steps", type=int, help="points on an integration path")
    group.add_argument("--integration", choices=_choices("integration"), default=None)
    group.add_argument(
        "--baseline",
        help="where an integration path starts: zeros, constant:VALUE, blur:SIGMA or a .npy file",
    )
    group.add_argument("--samples", type=int, help="noisy copies per sample")
    group.add_argument("--sigma", type=float, help="the noise's sd / (max - min)")
    group.add_argument("--seed", type=int, help="the noise's seed (default random)")


def method_help() -> str:
    names = ", ".join(method_names())
    return f"a method's name (`onnxplain models` lists a server's; this install's: {names})"


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The kept flags, by the parameter each one sets (None where not given)."""
    baseline: Any = args.baseline
    if baseline is not None and baseline.endswith(".npy"):
        baseline = np.load(Path(baseline))
    return {
        "layer": args.layer,
        "cam_style": args.cam_style,
        "gradient": args.gradient,
        "steps": args.steps,
        "integration": args.integration,
        "baseline": baseline,
        "samples": args.samples,
        "sigma": args.sigma,
        "seed": args.seed,
    }


def parse_params(texts: list[str], model: ModelSummary, method: str | None) -> dict[str, Any]:
    """`--param NAME=VALUE`s, each parsed by the type the server lists for it; ValueError
    naming a parameter the method does not take or a value of the wrong type."""
    if not texts:
        return {}
    name_of_method = method or model.default_method
    if name_of_method not in model.parameters:
        raise ValueError(
            f"model {model.name!r} serves no method {name_of_method!r}; it serves "
            f"{', '.join(model.parameters)}"
        )
    takes = {p.name: p for p in model.parameters[name_of_method]}
    params: dict[str, Any] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {text!r}: give NAME=VALUE")
        if name not in takes:
            raise ValueError(
                f"--param {name}: method {name_of_method!r} takes no {name!r} "
                f"(it takes: {', '.join(takes) or 'no parameters'})"
            )
        if name in params:
            raise ValueError(f"--param {name} is given twice")
        params[name] = parse_value(takes[name], value)
    return params


def parse_value(param: MethodParam, text: str) -> Any:
    try:
        if param.type == "int":
            return int(text)
        if param.type == "float":
            return float(text)
        if param.type == "bool":
            if text.lower() not in (*_TRUE, *_FALSE):
                raise ValueError(f"not one of {', '.join(_TRUE + _FALSE)}")
            return text.lower() in _TRUE
        if param.type == "tensor":
            return np.load(Path(text))
    except (ValueError, OSError) as exc:
        raise ValueError(f"--param {param.name}: {text!r} is not a {param.type} ({exc})") from None
    return text


def method_report(result: Explanation) -> list[str]:
    lines = []
    if result.layer:
        lines.append(f"layer: {result.layer}")
    if result.seed is not None:
        lines.append(f"noise seed: {result.seed} (--seed {result.seed} repeats this map)")
    if result.completeness_gap is not None:
        gaps = ", ".join(f"{g:.4g}" for g in result.completeness_gap)
        lines.append(f"completeness gap: {gaps}")
    for name, value in result.outputs.items():
        if name not in _REPORTED:
            lines.append(f"{name}: {_shown(value)}")
    return lines


def _shown(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        return ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value.tolist())
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return str(value)


def methods_lines(methods: dict[str, dict[str, str]], default_layer: str) -> list[str]:
    """`onnxplain models`' lines under a model: each method and its parameters' defaults."""
    lines = []
    for name, params in methods.items():
        shown = ", ".join(f"{p}={d}" if d else p for p, d in params.items())
        lines.append(f"  {name}" + (f" ({shown})" if shown else ""))
    if default_layer:
        lines.append(f"  Grad-CAM's default layer: {default_layer}")
    return lines
