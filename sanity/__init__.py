"""The sanity check of Adebayo et al. 2018: do a method's maps change when the model does?

Reading a stored report needs only the standard library (the server does that); running
the check needs the [sanity] extra (scipy, scikit-image), so those names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .cascade import Draw, Layer, cascade, parameter_layers, reinit_draw
from .report import (
    METRICS,
    REPORT_FILE,
    SCORES,
    MethodResult,
    SanityReport,
    Step,
    from_json,
    read_report,
    summarise,
    table,
)

if TYPE_CHECKING:
    from .check import run_sanity
    from .similarity import absolute_map, signed_map, similarities

_LAZY = {
    "run_sanity": ".check",
    "absolute_map": ".similarity",
    "signed_map": ".similarity",
    "similarities": ".similarity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "REPORT_FILE",
    "SCORES",
    "Draw",
    "Layer",
    "MethodResult",
    "SanityReport",
    "Step",
    "absolute_map",
    "cascade",
    "from_json",
    "parameter_layers",
    "read_report",
    "reinit_draw",
    "run_sanity",
    "signed_map",
    "similarities",
    "summarise",
    "table",
]
