"""Why a model failed to load, in words fit for clients: one line, no paths, no traceback,
no library's own error text where it would only say which library complained.

ListModels shows this reason, so an operator who can call the service but cannot read the
server's log still learns what is wrong with which file; `failure_detail` is what the log
adds (the library's own words, paths included).
"""

from __future__ import annotations

import re

from google.protobuf.message import DecodeError
from onnx.checker import ValidationError
from onnxplain.graph_rewrite import RewriteError

from ..core.errors import ConfigError
from .scan import MODEL_FILE

_MAX_LENGTH = 500
# An absolute path: a slash not preceded by a word character (so "NCHW/NHWC" is no path).
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\][^\s'\"`,;()\[\]]*")
# onnxruntime's prefix, e.g. "[ONNXRuntimeError] : 10 : INVALID_GRAPH : ".
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
# What ONNX's checker says of external data it will not read, as the reason for clients.
_EXTERNAL_DATA = (
    ("symbolic link", "is a symbolic link: external data must be a real file in the model folder"),
    ("outside model directory", "lies outside the model folder"),
    ("hard link", "has several hard links, which ONNX refuses"),
    ("not regular file", "is missing or not a regular file"),
    ("doesn't exist", "is missing or cannot be read"),
    ("not accessible", "is missing or cannot be read"),
    ("Cannot open", "is missing or cannot be read"),
)


def failure_reason(exc: BaseException) -> str:
    """The client-facing reason for a failed load, e.g. for ListModels' `error`."""
    if isinstance(exc, (RewriteError, ConfigError)):
        text = str(exc)  # written for users already
    elif isinstance(exc, DecodeError):
        text = f"{MODEL_FILE} is not an ONNX model: the file does not parse as one"
    elif isinstance(exc, ValidationError):
        text = _validation_reason(str(exc))
    elif isinstance(exc, OSError):
        name = _basename(str(exc.filename)) if exc.filename else "a file of the model"
        text = f"{name} cannot be read: {exc.strerror or type(exc).__name__}"
    elif type(exc).__module__.startswith("onnxruntime"):
        text = f"onnxruntime cannot run {MODEL_FILE}: {_ORT_PREFIX.sub('', str(exc))}"
    else:
        # Unforeseen: the class alone tells a client nothing, the log has the rest.
        text = f"{MODEL_FILE} could not be loaded (an unexpected error; see the server's log)"
    text = _PATH.sub(lambda m: _basename(m.group(0)), " ".join(text.split()))
    return text if len(text) <= _MAX_LENGTH else text[: _MAX_LENGTH - 3] + "..."


def failure_detail(exc: BaseException) -> str:
    """What the server's log adds to the reason: the exception as its library wrote it."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _validation_reason(message: str) -> str:
    """ONNX's checker, on loading: nearly always the model's external data."""
    if "external data" not in message and "should be stored in" not in message:
        return f"{MODEL_FILE} is not a valid ONNX model: it fails ONNX's own checks"
    tensor = re.search(r"tensor name: ([^)\s]+)\s*\)|for tensor '?([^'\s:]+)", message)
    stored = re.search(r"should be stored in (.+?)(?:, but|$)", message)
    what = "its external data"
    if stored:
        what += f" file {_basename(stored.group(1).strip())}"
    if tensor:
        what += f" (tensor {tensor.group(1) or tensor.group(2)!r})"
    why = next((w for key, w in _EXTERNAL_DATA if key in message), "cannot be read")
    return f"{MODEL_FILE}: {what} {why}"


def _basename(path: str) -> str:
    return re.split(r"[/\\]", path.rstrip("/\\"))[-1] or "(path)"
