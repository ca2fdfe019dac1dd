"""The gRPC Explain service: a model repository and explainer core behind a thin servicer."""

from .app import Limits, Service, build_server
from .errors import (
    ExplainError,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    RequestTooLarge,
)
from .explainer import ExplainCall, Explainer, Explanation
from .repository import DeviceUnavailable, Repository, SessionFactory

__all__ = [
    "DeviceUnavailable",
    "ExplainCall",
    "ExplainError",
    "Explainer",
    "Explanation",
    "InvalidInput",
    "Limits",
    "ModelNotFound",
    "ModelUnavailable",
    "Overloaded",
    "Repository",
    "RequestTooLarge",
    "Service",
    "SessionFactory",
    "build_server",
]
