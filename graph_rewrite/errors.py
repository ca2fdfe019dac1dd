"""Errors the rewrite pass raises. Each carries a message meant for the user, not a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class RewriteError(Exception):
    """The model cannot be turned into an explain model; the message says why."""


@dataclass(frozen=True)
class MissingRule:
    op_type: str
    node_name: str
    opset: int

    def __str__(self) -> str:
        return f"{self.op_type} (node {self.node_name!r}, opset {self.opset})"


class UnsupportedOpsError(RewriteError):
    """Ops on the differentiated path that have no backward rule, listed all at once."""

    def __init__(self, missing: list[MissingRule]) -> None:
        self.missing = missing
        kinds = sorted({m.op_type for m in missing})
        lines = "\n".join(f"  - {m}" for m in missing)
        super().__init__(
            f"{len(missing)} node(s) on the path from the explained input to the explained "
            f"output have no backward rule ({', '.join(kinds)}):\n{lines}"
        )
