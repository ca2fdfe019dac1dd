"""The rewrite pass: appends a saliency backward pass to an ONNX model as standard ops."""

from .errors import MissingRule, RewriteError, UnsupportedOpsError
from .explain import (
    GRAD_INPUT,
    SALIENCY_OUTPUT,
    Endpoints,
    build_explain_model,
    check,
    default_input,
    default_output,
)
from .methods import METHODS, RECTIFIER_CHOICES, Method, Rectifiers
from .shapes import InputShapes
from .targets import TARGETS, Target

__all__ = [
    "GRAD_INPUT",
    "METHODS",
    "RECTIFIER_CHOICES",
    "SALIENCY_OUTPUT",
    "TARGETS",
    "Endpoints",
    "InputShapes",
    "Method",
    "MissingRule",
    "Rectifiers",
    "RewriteError",
    "Target",
    "UnsupportedOpsError",
    "build_explain_model",
    "check",
    "default_input",
    "default_output",
]
