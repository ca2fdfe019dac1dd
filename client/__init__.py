"""The Python client of the Explain service."""

from .client import Client, Explanation, ModelSummary, Retry, ServerUnreachable, ServiceError

__all__ = ["Client", "Explanation", "ModelSummary", "Retry", "ServerUnreachable", "ServiceError"]
