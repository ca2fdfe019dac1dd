"""What a method is: a name, its parameters and the backward it builds.

A method's `build` gets a `Context` (backward.py, the pass that runs it) and returns the
saliency tensor's name. It asks the context for gradients (`ctx.gradient(rectifier_rule,
at=tensor)`: the one reverse walk of walk.py, with the method's rectifier override, stopped
at the input or at a layer) and adds its own epilogue (weighting, upsampling) with the
builder `ctx.g`.

Methods that run another method on a batch of copies (SmoothGrad, Integrated Gradients)
build their whole explain model instead (`whole_model`, methods/batched.py: prelude,
forward copy, the backward pass, epilogue).

The spec is also all the service and the clients know of a method: each parameter's kind
(GRAPH: a value changes the explain model, so each value has its own session; RUN_TIME:
fed to the model at run time, so one session serves every value) and wire type, the
method's extra outputs, whether it joins the merged graph of the gradient methods, and
the hooks that turn run-time parameters into the model's extra inputs (`feeds`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx

from ..backward import Context
from ..errors import RewriteError
from ..model_info import Dim
from ..rules import Rule

Shape = tuple[Dim, ...] | None
# A method that builds its whole explain model (the batch methods: another method's walk on
# a batch of copies, and outputs of their own): (model, resolved params, options) → model,
# where the options are build_explain_model's input_name, output_name, rectifiers, target
# and input_shapes.
WholeModel = Callable[..., onnx.ModelProto]


# A parameter's kind: GRAPH changes the explain model (each value is its own model and
# session), RUN_TIME is fed to it when it runs (one session serves every value).
ParamKind = Literal["graph", "run_time"]
GRAPH: ParamKind = "graph"
RUN_TIME: ParamKind = "run_time"
# The type of a tensor parameter: a numpy array, fed at run time (never on a command line).
Tensor = np.ndarray
# The name each parameter type has on the wire (the proto's ParamValue, MethodParameter.type).
WIRE_TYPES: dict[type, str] = {
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
    Tensor: "tensor",
}


@dataclass(frozen=True)
class Param:
    """One parameter of a method, as the CLI and the service list it."""

    name: str
    type: type  # str, int, float, bool or Tensor
    default: Any  # None: "chosen from the model" (e.g. Grad-CAM's layer), or "not given"
    description: str  # one line
    choices: tuple[Any, ...] | None = None
    kind: ParamKind = GRAPH
    # Refuses a value the method cannot take (raises ValueError or RewriteError), before
    # anything is built: e.g. a baseline that does not parse.
    check: Callable[[Any], object] | None = None

    @property
    def wire_type(self) -> str:
        return WIRE_TYPES[self.type]


@dataclass(frozen=True)
class Output:
    """A value a method returns besides the saliency, under `name`. A Tensor is an output
    of the explain model, one value per explained row (e.g. Integrated Gradients'
    completeness gap); any other type is a value its `feeds` hook reports (e.g. the seed
    SmoothGrad drew)."""

    name: str
    description: str
    type: type = Tensor

    @property
    def from_model(self) -> bool:
        return self.type is Tensor

    @property
    def wire_type(self) -> str:
        return WIRE_TYPES[self.type]


@dataclass(frozen=True)
class RunFeeds:
    """What a method's run-time parameters become for one run: the explain model's extra
    inputs, and values to report to the caller (e.g. the seed SmoothGrad drew)."""

    feeds: Mapping[str, np.ndarray] = field(default_factory=dict)
    reported: Mapping[str, Any] = field(default_factory=dict)


# (every parameter, resolved; the input batch) -> the run's feeds. Raises ValueError or
# RewriteError, naming the parameter, for a value that does not fit the input.
Feeder = Callable[[Mapping[str, Any], np.ndarray], RunFeeds]
# (every parameter, resolved) -> (the parameter that sets it, copies of each sample that
# one run holds): what the service bounds, so that one request cannot take its memory.
Copies = Callable[[Mapping[str, Any]], tuple[str, int]]
# (the parameters a request gave) -> graph parameters they imply (e.g. a baseline tensor
# implies the baseline kind "input").
Implied = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def same_shape(input_shape: Shape) -> Shape:
    return input_shape


@dataclass(frozen=True)
class MethodSpec:
    """A method's home: everything the rewrite pass needs to build it."""

    name: str
    summary: str  # one line, for `--help` and the service's model listing
    build: Callable[[Context], str]
    params: tuple[Param, ...] = ()
    # The saliency's shape from the explained input's (e.g. one channel for Grad-CAM).
    saliency_shape: Callable[[Shape], Shape] = same_shape
    # Set for methods that build the whole explain model themselves; `build` is then unused.
    whole_model: WholeModel | None = None
    # The explain model's extra outputs besides `saliency`, one value per row.
    outputs: tuple[Output, ...] = ()
    # Whether the method at its default parameters may share one merged graph with the
    # other such methods (server: one forward pass and one copy of the weights for all): it
    # takes no input but the model's and the seed, and has no extra output.
    merges: bool = False
    # Run-time parameters → the explain model's extra inputs (None: it has none).
    feeds: Feeder | None = None
    copies: Copies | None = None
    implied: Implied | None = None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def params_of(self, kind: ParamKind) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind == kind)

    def resolve(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The parameters with defaults filled in; a RewriteError for a wrong one."""
        given = dict(given or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            takes = ", ".join(known) or "no parameters"
            raise RewriteError(
                f"method {self.name!r} has no parameter {unknown[0]!r} (takes: {takes})"
            )
        resolved: dict[str, Any] = {}
        for name, param in known.items():
            value = given.get(name, param.default)
            if value is not None and given.get(name) is not None:
                value = _checked(self.name, param, value)
            resolved[name] = value
        return resolved


def _checked(method: str, param: Param, value: Any) -> Any:
    ok = isinstance(value, param.type) and not (param.type is not bool and isinstance(value, bool))
    if param.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise RewriteError(
            f"method {method!r}: parameter {param.name!r} takes a {param.wire_type}, "
            f"not {_shown(value)}"
        )
    if param.choices is not None and value not in param.choices:
        raise RewriteError(
            f"method {method!r}: parameter {param.name!r} is one of "
            f"{', '.join(map(str, param.choices))}, not {value!r}"
        )
    if param.check is not None:
        try:
            param.check(value)
        except (ValueError, RewriteError) as exc:
            raise RewriteError(f"method {method!r}: parameter {param.name!r}: {exc}") from None
    return value


def _shown(value: Any) -> str:
    if isinstance(value, np.ndarray):  # never the whole array in a message
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return repr(value)


def gradient_at_input(rectifier_rule: Rule | None) -> Callable[[Context], str]:
    """The build of a plain gradient method: the walk to the input, nothing after it."""

    def build(ctx: Context) -> str:
        return ctx.gradient(rectifier_rule)

    return build


def spatial_axes(rank: int | None, what: str) -> Sequence[int]:
    """Axes 2.. of an N, C, spatial... tensor of rank 3 to 5; a RewriteError otherwise."""
    if rank is None or not 3 <= rank <= 5:
        raise RewriteError(f"{what} must be 3-D to 5-D (N, C, spatial...), not of rank {rank}")
    return list(range(2, rank))
