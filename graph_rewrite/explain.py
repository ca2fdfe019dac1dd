"""The public API of the rewrite: forward model in, explain model out, as keyword arguments.

Each function here is the recipe (recipe.py: prepare → fold → backward → seed) with its
options spelled out, so that callers need not build a RecipeOptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx

from .backward import GRAD_INPUT, SALIENCY_OUTPUT
from .methods import METHODS, Method
from .recipe import RecipeOptions, check_recipe, explain_recipe
from .recipe import candidate_layers as recipe_candidate_layers
from .recipe import default_layer as recipe_default_layer
from .rules.rectifiers import DEFAULT_RECTIFIERS, Rectifiers
from .shapes import InputShapes
from .targets import Target
from .walk import Endpoints


def build_explain_model(
    model: onnx.ModelProto,
    method: Method = "guided",
    input_name: str | None = None,
    output_name: str | None = None,
    rectifiers: Rectifiers = DEFAULT_RECTIFIERS,
    grad_name: str = GRAD_INPUT,
    saliency_name: str = SALIENCY_OUTPUT,
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
    params: Mapping[str, Any] | None = None,
) -> onnx.ModelProto:
    """The explain model: `model` plus an input `grad_name` and an output `saliency_name`.

    `method` is a registered method's name (methods/); `params` its parameters (e.g.
    {"layer": "relu_9", "style": "pytorch-grad-cam"} for gradcam), defaults for the rest.
    `target` "portable" gives the same saliency on every conforming runtime; a runtime's
    name allows formulations that are faster on that runtime alone (see targets.py).
    `input_shapes` fixes the named inputs' shapes first (e.g. {"x": [1, 3, 640, 640]}).
    """
    options = RecipeOptions(
        input_name, output_name, rectifiers, grad_name, saliency_name, target, input_shapes
    )
    return explain_recipe(model, method, params, options)


def check(
    model: onnx.ModelProto,
    input_name: str | None = None,
    output_name: str | None = None,
    methods: Sequence[Method] = METHODS,
    rectifiers: Rectifiers = DEFAULT_RECTIFIERS,
    grad_name: str = GRAD_INPUT,
    saliency_name: str = SALIENCY_OUTPUT,
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Endpoints:
    """The explained endpoints, once every step of `build_explain_model` has run for each
    of `methods` (all but writing the result); raises the RewriteError convert would.
    `params` maps a method's name to its parameters."""
    options = RecipeOptions(
        input_name, output_name, rectifiers, grad_name, saliency_name, target, input_shapes
    )
    return check_recipe(model, methods, params, options)


def default_layer(
    model: onnx.ModelProto,
    input_name: str | None = None,
    output_name: str | None = None,
    input_shapes: InputShapes | None = None,
) -> str | None:
    """Grad-CAM's default layer (layers.py), or None when the model has none (a detector)."""
    options = RecipeOptions(input_name, output_name, input_shapes=input_shapes)
    return recipe_default_layer(model, options)


def candidate_layers(
    model: onnx.ModelProto,
    input_name: str | None = None,
    output_name: str | None = None,
    input_shapes: InputShapes | None = None,
) -> dict[str, str]:
    """Grad-CAM layers to choose from where the model has no default (a detector, a
    segmenter): each stage's last feature map, in path order (layers.py), each with its
    shape as text and " (into a head)" where a head turns it into predictions."""
    options = RecipeOptions(input_name, output_name, input_shapes=input_shapes)
    return recipe_candidate_layers(model, options)
