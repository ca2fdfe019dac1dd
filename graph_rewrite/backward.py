"""The backward pass: a method's build over the reverse walk, appended to a prepared model.

    in    the prepared (and folded) forward model, its endpoints, a method and its parameters
    out   the same model plus the input `output_grad` (the seed, like the explained output)
          and the output `saliency` (the method's map)

The method's `build` (methods/) gets a `Context`: the builder over the model, and
`ctx.gradient(rule, at=...)`, the one reverse walk of walk.py with the method's rectifier
override, stopped at the input or at a layer. Nothing here reads the method registry: a
method arrives as its spec, so methods that run this pass themselves (the batch methods)
import this file and not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import onnx
from onnx import helper

from .builder import Builder
from .candidates import candidate_layers, sized_view
from .errors import RewriteError, UnsupportedOpsError
from .gradient_shapes import gradient_value_info
from .layers import last_spatial_layer
from .model_info import ModelInfo, ai_onnx_opset
from .rules import Rule
from .rules.rectifiers import DEFAULT_RECTIFIERS, Rectifiers, with_rectifier_rule
from .scalar_ranks import match_scalar_ranks
from .targets import Target
from .walk import Endpoints, Path, differentiated_path, missing_rules, reverse_walk

if TYPE_CHECKING:  # the specs' module imports Context from here
    from .methods.base import MethodSpec

GRAD_INPUT = "output_grad"
SALIENCY_OUTPUT = "saliency"


@dataclass
class Context:
    """What a method's build sees: the builder over the prepared forward model and its
    endpoints, the user's rectifier choice and the method's resolved parameters."""

    g: Builder
    ends: Endpoints
    input_path: Path
    rectifiers: Rectifiers
    params: Mapping[str, Any]
    grad_name: str
    opset: int  # the model's own, for error messages
    default_layer: Callable[[], str | None]
    _paths: dict[str, Path] = field(default_factory=dict)
    _default: str | None = None
    _default_searched: bool = False

    def gradient(self, rectifier_rule: Rule | None = None, at: str | None = None) -> str:
        """d(output · seed)/d(`at`), the input by default, with every rectifier's backward
        replaced by `rectifier_rule` (None: the true gradient)."""
        table = with_rectifier_rule(rectifier_rule, self.rectifiers)
        stop = self.ends.input if at is None else at
        path = self._path_to(stop)
        missing = missing_rules(path, self.opset, table)
        if missing:
            raise UnsupportedOpsError(missing)
        return reverse_walk(self.g, path, Endpoints(stop, self.ends.output), table, self.grad_name)

    def layer(self) -> str:
        """The `layer` parameter, or the model's default layer when none was given."""
        given = self.params.get("layer")
        if given:
            return str(given)
        if not self._default_searched:  # once per build: Guided Grad-CAM asks several times
            self._default, self._default_searched = self.default_layer(), True
        found = self._default
        if found is None:
            raise RewriteError(
                f"no default layer: nothing on the path to {self.ends.output!r} pools or "
                "flattens a 3-D to 5-D tensor; name the layer (--layer, or the layer "
                f"parameter){describe_candidates(self.g.info, self.ends, self.input_path)}"
            )
        return found

    def _path_to(self, stop: str) -> Path:
        if stop == self.ends.input:
            return self.input_path
        if stop not in self._paths:
            if stop not in self.input_path.tensors:
                raise RewriteError(
                    f"layer {stop!r} is not a float tensor between the input "
                    f"{self.ends.input!r} and the output {self.ends.output!r}"
                )
            self._paths[stop] = differentiated_path(self.g.info, Endpoints(stop, self.ends.output))
        return self._paths[stop]


@dataclass(frozen=True)
class BackwardOptions:
    """How the backward pass builds: the endpoints, the method's resolved parameters, the
    rectifier choice, the names of the seed and the map, and the runtime it targets."""

    ends: Endpoints
    params: Mapping[str, Any] = field(default_factory=dict)
    rectifiers: Rectifiers = DEFAULT_RECTIFIERS
    grad_name: str = GRAD_INPUT
    saliency_name: str = SALIENCY_OUTPUT
    target: Target = "portable"
    # The model's opset as exported, which error messages name; None: the model's own.
    source_opset: int | None = None


@dataclass
class Planned:
    """The backward pass's nodes and weights (in a builder) and the map's tensor, before
    any of it joins the model."""

    g: Builder
    saliency: str


def plan(model: onnx.ModelProto, spec: MethodSpec, options: BackwardOptions) -> Planned:
    """Every step of the backward pass but changing the model: raises what `backward`
    would (an op without a rule, a layer not on the path, a name already taken)."""
    info = ModelInfo(model)
    path = differentiated_path(info, options.ends)
    _check_free(model, options.grad_name, options.saliency_name)
    g = Builder(info, options.target)
    opset = ai_onnx_opset(model) if options.source_opset is None else options.source_opset
    ctx = Context(
        g=g,
        ends=options.ends,
        input_path=path,
        rectifiers=options.rectifiers,
        params=options.params,
        grad_name=options.grad_name,
        opset=opset,
        default_layer=lambda: last_spatial_layer(info, path),
    )
    return Planned(g, spec.build(ctx))


def backward(model: onnx.ModelProto, spec: MethodSpec, options: BackwardOptions) -> onnx.ModelProto:
    """`model` (changed in place and returned) with the seed input, the backward pass of
    `spec` and the saliency output."""
    planned = plan(model, spec, options)
    g, info, ends = planned.g, planned.g.info, options.ends
    graph = model.graph
    out_info = info.info(ends.output)
    in_info = info.info(ends.input)
    graph.input.append(_value_info(options.grad_name, out_info.elem_type, out_info.shape))
    match_scalar_ranks(g)
    graph.node.extend(g.nodes)
    graph.value_info.extend(gradient_value_info(g))
    name = options.saliency_name
    graph.node.append(helper.make_node("Identity", [planned.saliency], [name], name=name))
    g.write_initializers(graph)
    graph.output.append(_value_info(name, in_info.elem_type, spec.saliency_shape(in_info.shape)))
    return model


def default_layer(model: onnx.ModelProto, ends: Endpoints) -> str | None:
    """Grad-CAM's default layer of a prepared model (layers.py), or None when it has none."""
    info = ModelInfo(model)
    return last_spatial_layer(info, differentiated_path(info, ends))


def default_candidates(model: onnx.ModelProto, ends: Endpoints) -> dict[str, str]:
    """The candidate layers (layers.py) of a prepared model, for one without a default,
    each with its shape as text ("[?, 64, ?, ?]" where a dimension is free) and, for the
    maps that a head turns into predictions, " (into a head)"."""
    info = ModelInfo(model)
    found = candidate_layers(sized_view(model, ends.input), differentiated_path(info, ends))
    return {t: _shape_text(info, t) + (" (into a head)" if head else "") for t, head in found}


def describe_candidates(info: ModelInfo, ends: Endpoints, path: Path, most: int = 6) -> str:
    """ "; candidates, ...": the coarsest stage outputs with their shapes, or ""."""
    sized = sized_view(info.model, ends.input)
    found = candidate_layers(sized, path)
    if not found:
        return ""

    def cells(name: str) -> float:
        size = 1.0
        for d in (sized.info(name).shape or ())[2:]:
            size *= d if isinstance(d, int) else float("inf")
        return size

    # A stage's map before a head's predictions; the coarsest (deepest) first, then the
    # later among equals.
    order = {t: i for i, (t, _) in enumerate(found)}
    picked = sorted(found, key=lambda th: (th[1], cells(th[0]), -order[th[0]]))[:most]
    listed = ", ".join(f"{t!r} {_shape_text(info, t)}" for t, _ in picked)
    more = f" (and {len(found) - most} more)" if len(found) > most else ""
    return f"; candidates, deepest first: {listed}{more}; onnxplain check lists them all"


def _shape_text(info: ModelInfo, name: str) -> str:
    shape = info.info(name).shape or ()
    return "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in shape) + "]"


def _check_free(model: onnx.ModelProto, grad_name: str, saliency_name: str) -> None:
    existing = {vi.name for vi in (*model.graph.input, *model.graph.output)}
    existing |= {t for node in model.graph.node for t in (*node.input, *node.output)}
    for new in (grad_name, saliency_name):
        if new in existing:
            raise RewriteError(
                f"the model already has a tensor named {new!r}; choose another name for the "
                f"explain model's {'gradient input' if new == grad_name else 'saliency output'}"
            )


def _value_info(
    name: str, elem_type: int, shape: Sequence[int | str | None] | None
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        name, elem_type or onnx.TensorProto.FLOAT, None if shape is None else list(shape)
    )
