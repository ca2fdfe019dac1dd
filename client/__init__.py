"""The Python client of the Explain service."""

from .client import Client, Explanation, ModelSummary, Retry, ServerUnreachable, ServiceError
from .targets import DetectionBox, ExplainedDetection, Position, Region

__all__ = [
    "Client",
    "DetectionBox",
    "ExplainedDetection",
    "Explanation",
    "ModelSummary",
    "Position",
    "Region",
    "Retry",
    "ServerUnreachable",
    "ServiceError",
]
