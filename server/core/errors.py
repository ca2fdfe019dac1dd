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


class InvalidImage(InvalidInput):
    """The image bytes are not a PNG or JPEG this server decodes (damaged, another format,
    more pixels than its limit). Its own class so that its refusals are logged as a kind."""


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


# What an error message may echo of a client's own strings (a model name, a label...), and
# how long a whole message may be, in UTF-8 bytes: gRPC sends it percent-encoded in a
# header (up to 3 bytes a byte), and a header over the channel's 8 KB metadata limit turns
# the answer into RESOURCE_EXHAUSTED. A 1 MB model name must still come back NOT_FOUND.
MAX_ECHO_CHARS = 100
MAX_MESSAGE_BYTES = 1000
_ELLIPSIS = "…"


def shown(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)` for an error message, cut to `limit` characters with "…"."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


def bounded(message: str) -> str:
    """`message` fit to send back: every run of more than MAX_ECHO_CHARS characters without
    a space (an echoed name, value or list) cut to that with "…", and then the whole kept
    under MAX_MESSAGE_BYTES, its beginning and its end (where the hint usually is)."""
    words = [
        word if len(word) <= MAX_ECHO_CHARS else word[: MAX_ECHO_CHARS - 1] + _ELLIPSIS
        for word in message.split(" ")
    ]
    text = " ".join(words)
    data = text.encode("utf-8")
    if len(data) <= MAX_MESSAGE_BYTES:
        return text
    gap = f" {_ELLIPSIS} ".encode()
    tail = MAX_MESSAGE_BYTES // 4
    head = MAX_MESSAGE_BYTES - tail - len(gap)
    # errors="ignore" drops a character cut in half at either edge.
    return (data[:head] + gap + data[-tail:]).decode("utf-8", errors="ignore")
