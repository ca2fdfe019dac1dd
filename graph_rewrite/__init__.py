"""The rewrite: appends a saliency backward pass to an ONNX model as standard ops.

The passes, one per file, run in the order recipe.py chains them: prepare.py → fold.py →
backward.py → seeding.py (→ merge.py for several methods in one graph). explain.py is the
keyword-argument API over the recipe.
"""

from .backward import GRAD_INPUT, SALIENCY_OUTPUT
from .errors import MissingRule, RewriteError, UnsupportedOpsError
from .explain import build_explain_model, candidate_layers, check, default_layer
from .methods import (
    ALL_METHODS,
    METHODS,
    RECTIFIER_CHOICES,
    REGISTRY,
    Method,
    MethodSpec,
    Param,
    Rectifiers,
)
from .prepare import default_input, default_output, resolve_endpoints
from .recipe import RecipeOptions, SeedFrom, explain_recipe, merged_recipe, with_output
from .seeding import TARGETS_INPUT, TARGETS_OUTPUT, TOP_CLASS
from .shapes import InputShapes
from .targets import TARGETS, Target
from .walk import Endpoints

__all__ = [
    "ALL_METHODS",
    "GRAD_INPUT",
    "METHODS",
    "RECTIFIER_CHOICES",
    "REGISTRY",
    "SALIENCY_OUTPUT",
    "TARGETS",
    "TARGETS_INPUT",
    "TARGETS_OUTPUT",
    "TOP_CLASS",
    "Endpoints",
    "InputShapes",
    "Method",
    "MethodSpec",
    "MissingRule",
    "Param",
    "RecipeOptions",
    "Rectifiers",
    "RewriteError",
    "SeedFrom",
    "Target",
    "UnsupportedOpsError",
    "build_explain_model",
    "candidate_layers",
    "check",
    "default_input",
    "default_layer",
    "default_output",
    "explain_recipe",
    "merged_recipe",
    "resolve_endpoints",
    "with_output",
]
