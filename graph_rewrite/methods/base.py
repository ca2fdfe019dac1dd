"""What a method is: a name, its parameters and the backward it builds.

A method's `build` gets a `Context` (backward.py, the pass that runs it) and returns the
saliency tensor's name. It asks the context for gradients (`ctx.gradient(rectifier_rule,
at=tensor)`: the one reverse walk of walk.py, with the method's rectifier override, stopped
at the input or at a layer) and adds its own epilogue (weighting, upsampling) with the
builder `ctx.g`.

Methods that run another method on a batch of copies (SmoothGrad, Integrated Gradients)
build their whole explain model instead (`whole_model`, methods/batched.py: prelude,
forward copy, the backward pass, epilogue).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Param:
    """One parameter of a method, as the CLI and the service list it."""

    name: str
    type: type  # str, int, float or bool
    default: Any  # None: "chosen from the model" (e.g. Grad-CAM's layer)
    description: str  # one line
    choices: tuple[Any, ...] | None = None


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
            f"method {method!r}: parameter {param.name!r} takes a {param.type.__name__}, "
            f"not {value!r}"
        )
    if param.choices is not None and value not in param.choices:
        raise RewriteError(
            f"method {method!r}: parameter {param.name!r} is one of "
            f"{', '.join(map(str, param.choices))}, not {value!r}"
        )
    return value


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
