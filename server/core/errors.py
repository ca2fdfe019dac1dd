"""The core's errors. They know nothing of gRPC; `server.app` maps each to a status code.

Every message is meant for the client: it says what was wrong with the request and never
names a file path or carries a traceback.
"""

from __future__ import annotations


class ExplainError(Exception):
    """Base of the errors a request can cause."""


class ModelNotFound(ExplainError):
    """The request names a model the repository does not have."""


class ModelUnavailable(ExplainError):
    """The model exists but failed to load."""


class InvalidInput(ExplainError):
    """The input, method or targets do not fit the model."""


class RequestTooLarge(ExplainError):
    """The request is larger than the server's limits allow (batch size)."""


class Overloaded(ExplainError):
    """The server is already running as many explanations as it allows."""


class ConfigError(Exception):
    """A model's config.toml is malformed; raised at load time, never to clients."""


class DeadlineExceeded(ExplainError):
    """The request's deadline passed before its explanation could run."""


class Cancelled(ExplainError):
    """The caller went away; nothing is sent back."""
