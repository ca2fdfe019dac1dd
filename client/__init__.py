"""The Python client of the Explain service."""

from .client import Client, Explanation, ModelSummary, ServiceError

__all__ = ["Client", "Explanation", "ModelSummary", "ServiceError"]
