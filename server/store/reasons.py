"""Why a model failed to load, in words fit for clients: one line, no paths, no traceback.

ListModels shows this reason, so an operator who can call the service but cannot read the
server's log still learns what is wrong; the paths stay in the log.
"""

from __future__ import annotations

import re

from google.protobuf.message import DecodeError
from onnxplain.graph_rewrite import RewriteError

from ..core.errors import ConfigError

_MAX_LENGTH = 500
# An absolute path: a slash not preceded by a word character (so "NCHW/NHWC" is no path).
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\][^\s'\"`,;()\[\]]*")


def failure_reason(exc: BaseException) -> str:
    """The client-facing reason for a failed load, e.g. for ListModels' `error`."""
    if isinstance(exc, (RewriteError, ConfigError)):
        text = str(exc)  # written for users already
    elif isinstance(exc, DecodeError):
        text = f"model.onnx is not an ONNX model ({exc})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = _PATH.sub(lambda m: _basename(m.group(0)), " ".join(text.split()))
    return text if len(text) <= _MAX_LENGTH else text[: _MAX_LENGTH - 3] + "..."


def _basename(path: str) -> str:
    return re.split(r"[/\\]", path.rstrip("/\\"))[-1] or "(path)"
