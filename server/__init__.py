"""The gRPC Explain service: a model repository and explainer core behind a thin servicer."""

from .app import Limits, Service, build_server
from .batching import QueueLimits
from .errors import (
    Cancelled,
    DeadlineExceeded,
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
    "Cancelled",
    "DeadlineExceeded",
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
    "QueueLimits",
    "Repository",
    "RequestTooLarge",
    "Service",
    "SessionFactory",
    "build_server",
]
