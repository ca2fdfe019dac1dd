"""The gRPC Explain service: a model repository and explainer core behind a thin servicer."""

from .core.batching import QueueLimits
from .core.errors import (
    Cancelled,
    DeadlineExceeded,
    ExplainError,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    RequestTooLarge,
)
from .core.explainer import ExplainCall, Explainer, Explanation
from .protocols.grpc.app import Limits, Service, build_server
from .store.repository import DeviceUnavailable, Repository, SessionFactory

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
