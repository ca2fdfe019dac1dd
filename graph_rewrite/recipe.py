"""The recipe: the passes in their order, the one way an explain model is built.

    explain_recipe   prepare → fold → backward → seed        one method's explain model
    merged_recipe    explain_recipe per method → merge       several methods, one graph

`onnxplain convert` (cli.py), `build_explain_model` (explain.py, the public API) and the
server (server/store/repository.py) all build through here, so a model the server runs is the
model convert writes with the same options. Each pass is a function from model to model in
a file of its own (prepare.py, fold.py, backward.py, seeding.py, merge.py). A method that
builds its whole model (a batch method: `MethodSpec.whole_model`, methods/batched.py) runs
prepare, fold and backward itself, around its own prelude and epilogue; the seed pass is
the same for every method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import onnx
from onnx import helper

from .backward import (
    GRAD_INPUT,
    SALIENCY_OUTPUT,
    BackwardOptions,
    backward,
    default_candidates,
    plan,
)
from .backward import default_layer as layer_of_prepared
from .errors import RewriteError, UnsupportedOpsError
from .fold import fold
from .merge import merge_explain_models
from .methods import METHODS, Method, MethodSpec, method_spec
from .model_info import ai_onnx_opset
from .prepare import prepare, resolve_endpoints
from .rules.rectifiers import DEFAULT_RECTIFIERS, Rectifiers, rectifier_ops
from .seeding import seed_from_targets
from .shapes import InputShapes
from .targets import Target, check_target
from .walk import Endpoints

# Where the explain model's seed comes from: the caller's `output_grad`, or the int64
# input `targets` the seed pass adds (seeding.py).
SeedFrom = Literal["output_grad", "targets"]
SEED_CHOICES: tuple[SeedFrom, ...] = ("output_grad", "targets")


@dataclass(frozen=True)
class RecipeOptions:
    """What every method's build shares: the endpoints (None: the defaults, prepare.py),
    the rectifier choice, the names of the seed and the map, the runtime it targets, the
    input shapes fixed first, and where the seed comes from."""

    input_name: str | None = None
    output_name: str | None = None
    rectifiers: Rectifiers = DEFAULT_RECTIFIERS
    grad_name: str = GRAD_INPUT
    saliency_name: str = SALIENCY_OUTPUT
    target: Target = "portable"
    input_shapes: InputShapes | None = None
    seed_from: SeedFrom = "output_grad"
    # The explained output a graph output too (it may be internal, e.g. the logits before
    # a Softmax), for callers that read the scores the seed was chosen from.
    expose_output: bool = False


def explain_recipe(
    model: onnx.ModelProto,
    method: Method,
    params: Mapping[str, Any] | None = None,
    options: RecipeOptions = RecipeOptions(),
) -> onnx.ModelProto:
    """The explain model of `method` with `params` (defaults for the rest); `model` is
    left as it is."""
    spec, resolved = _spec_and_params(method, options.rectifiers, params)
    target = check_target(options.target)
    if options.seed_from not in SEED_CHOICES:
        raise ValueError(f"unknown seed {options.seed_from!r}; choose one of {SEED_CHOICES}")
    if spec.whole_model is not None:
        _batch_names(options)
        explain = spec.whole_model(
            model,
            resolved,
            input_name=options.input_name,
            output_name=options.output_name,
            rectifiers=options.rectifiers,
            target=target,
            input_shapes=options.input_shapes,
        )
    else:
        opset = ai_onnx_opset(model)  # the model's own, as exported, for error messages
        ends = resolve_endpoints(model, options.input_name, options.output_name)
        prepared = _prepared(model, ends, options.input_shapes, resolved)
        explain = backward(prepared, spec, _backward_options(opset, ends, resolved, options))
    if options.seed_from == "targets" or options.expose_output:
        ends = resolve_endpoints(model, options.input_name, options.output_name)
        if options.seed_from == "targets":
            explain = seed_from_targets(explain, ends.output, grad_name=options.grad_name)
        if options.expose_output:
            explain = with_output(explain, ends.output)
    return explain


def merged_recipe(
    model: onnx.ModelProto, methods: Sequence[Method], options: RecipeOptions = RecipeOptions()
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """One graph serving `methods` (at their default parameters), built on the first one's
    explain model, and each method's saliency output name in it (merge.py)."""
    models = {m: explain_recipe(model, m, None, options) for m in methods}
    return merge_explain_models(models, options.saliency_name)


def check_recipe(
    model: onnx.ModelProto,
    methods: Sequence[Method] = METHODS,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    options: RecipeOptions = RecipeOptions(),
) -> Endpoints:
    """The explained endpoints, once every step of `explain_recipe` has run for each of
    `methods` (all but writing the result); raises the RewriteError the build would.
    `params` maps a method's name to its parameters."""
    ends, verdicts = check_each(model, methods, params, options)
    for i, (method, error) in enumerate(verdicts.items()):
        if error is None:
            continue
        if i == 0 or isinstance(error, UnsupportedOpsError):
            raise error
        # The earlier methods passed: the failure is this method's own, so say which.
        raise RewriteError(f"method {method!r}: {error}") from None
    return ends


def check_each(
    model: onnx.ModelProto,
    methods: Sequence[Method] = METHODS,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    options: RecipeOptions = RecipeOptions(),
) -> tuple[Endpoints, dict[Method, RewriteError | None]]:
    """The explained endpoints and, per method, the RewriteError its build would raise (None
    where it builds), the model prepared once for all of them. A failure that is no
    method's own (the endpoints, the input shapes) is raised."""
    params = params or {}
    target = check_target(options.target)
    opset = ai_onnx_opset(model)
    ends = resolve_endpoints(model, options.input_name, options.output_name)
    shared = _prepared(model, ends, options.input_shapes, {})
    verdicts: dict[Method, RewriteError | None] = {}
    for method in methods:
        try:
            spec, method_params = _spec_and_params(method, options.rectifiers, params.get(method))
            if spec.whole_model is not None:
                _batch_names(options)
                spec.whole_model(
                    model,
                    method_params,
                    input_name=options.input_name,
                    output_name=options.output_name,
                    rectifiers=options.rectifiers,
                    target=target,
                    input_shapes=options.input_shapes,
                )
            else:
                prepared = shared
                if method_params.get("layer"):
                    prepared = _prepared(model, ends, options.input_shapes, method_params)
                plan(prepared, spec, _backward_options(opset, ends, method_params, options))
            verdicts[method] = None
        except RewriteError as exc:
            verdicts[method] = exc
    return ends, verdicts


def default_layer(model: onnx.ModelProto, options: RecipeOptions = RecipeOptions()) -> str | None:
    """Grad-CAM's default layer (layers.py) of the prepared model, or None when it has none
    (a detector)."""
    ends = resolve_endpoints(model, options.input_name, options.output_name)
    return layer_of_prepared(_prepared(model, ends, options.input_shapes, {}), ends)


def candidate_layers(
    model: onnx.ModelProto, options: RecipeOptions = RecipeOptions()
) -> dict[str, str]:
    """Feature maps to name as Grad-CAM's layer where the model has no default (layers.py:
    each stage's last map, in path order), with their shapes as text."""
    ends = resolve_endpoints(model, options.input_name, options.output_name)
    return default_candidates(_prepared(model, ends, options.input_shapes, {}), ends)


def with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """`model` (changed in place and returned) with the tensor `name` among its outputs."""
    graph = model.graph
    if name in {o.name for o in graph.output}:
        return model
    infos = {vi.name: vi for vi in (*graph.value_info, *graph.input, *graph.output)}
    info = infos.get(name)
    graph.output.append(info if info is not None else helper.make_empty_tensor_value_info(name))
    return model


def _prepared(
    model: onnx.ModelProto,
    ends: Endpoints,
    input_shapes: InputShapes | None,
    params: Mapping[str, Any],
) -> onnx.ModelProto:
    """prepare → fold. BatchNorm and per-channel affines after a conv go into its weights:
    the forward part is then what a runtime would run anyway, and their backward costs
    nothing. A layer the method reads must stay, so the fold may not merge it away."""
    prepared = prepare(model, ends, input_shapes)
    keep = {ends.input, ends.output}
    if params.get("layer"):
        layer = str(params["layer"])
        if layer not in {t for node in prepared.graph.node for t in node.output}:
            raise RewriteError(f"the model has no tensor named {layer!r} (given as the layer)")
        keep.add(layer)
    return fold(prepared, keep)


def _backward_options(
    opset: int, ends: Endpoints, params: Mapping[str, Any], options: RecipeOptions
) -> BackwardOptions:
    return BackwardOptions(
        ends,
        params,
        options.rectifiers,
        options.grad_name,
        options.saliency_name,
        check_target(options.target),
        source_opset=opset,
    )


def _spec_and_params(
    method: Method, rectifiers: Rectifiers, params: Mapping[str, Any] | None
) -> tuple[MethodSpec, dict[str, Any]]:
    spec = method_spec(method)
    rectifier_ops(rectifiers)  # a ValueError for an unknown choice, before any work
    return spec, spec.resolve(params)


def _batch_names(options: RecipeOptions) -> None:
    if (options.grad_name, options.saliency_name) != (GRAD_INPUT, SALIENCY_OUTPUT):
        raise RewriteError(
            f"the batch methods name their seed {GRAD_INPUT!r} and their map "
            f"{SALIENCY_OUTPUT!r}; other names are not supported"
        )
