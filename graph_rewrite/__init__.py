"""The rewrite pass: appends a saliency backward pass to an ONNX model as standard ops."""

from .errors import MissingRule, RewriteError, UnsupportedOpsError
from .explain import (
    GRAD_INPUT,
    SALIENCY_OUTPUT,
    Endpoints,
    build_explain_model,
    check,
    default_input,
    default_layer,
    default_output,
)
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
from .shapes import InputShapes
from .targets import TARGETS, Target

__all__ = [
    "ALL_METHODS",
    "GRAD_INPUT",
    "METHODS",
    "RECTIFIER_CHOICES",
    "REGISTRY",
    "SALIENCY_OUTPUT",
    "TARGETS",
    "Endpoints",
    "InputShapes",
    "Method",
    "MethodSpec",
    "MissingRule",
    "Param",
    "Rectifiers",
    "RewriteError",
    "Target",
    "UnsupportedOpsError",
    "build_explain_model",
    "check",
    "default_input",
    "default_layer",
    "default_output",
]
