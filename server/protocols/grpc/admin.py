"""The admin service (proto/onnxplain/v1/admin.proto): decode, call the reloader, encode."""

from __future__ import annotations

import threading
from typing import Any

from onnxplain.v1 import admin_pb2, admin_pb2_grpc

from ...ops.reload import Change, Outcome, Reloader, ReloadPending

_OUTCOME_TO_WIRE = {
    Outcome.ADDED: admin_pb2.RELOAD_OUTCOME_ADDED,
    Outcome.UPDATED: admin_pb2.RELOAD_OUTCOME_UPDATED,
    Outcome.REMOVED: admin_pb2.RELOAD_OUTCOME_REMOVED,
    Outcome.FAILED: admin_pb2.RELOAD_OUTCOME_FAILED,
    Outcome.KEPT_PREVIOUS: admin_pb2.RELOAD_OUTCOME_KEPT_PREVIOUS,
}


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, reloader: Reloader) -> None:
        self.reloader = reloader

    def ReloadModels(
        self, request: admin_pb2.ReloadModelsRequest, context: Any
    ) -> admin_pb2.ReloadModelsResponse:
        # Wait as long as the caller does (its deadline), not forever: the reload goes on.
        # A call without a deadline has "forever" remaining, past what a lock wait takes
        # (threading.TIMEOUT_MAX): it waits for the reload itself.
        remaining = context.time_remaining()
        if remaining is not None and remaining > threading.TIMEOUT_MAX:
            remaining = None
        changes = self.reloader.wait(self.reloader.request(), remaining)
        if changes is None:
            raise ReloadPending("the reload is still running; ListModels shows its progress")
        return admin_pb2.ReloadModelsResponse(changes=[encode_change(c) for c in changes])


def encode_change(change: Change) -> admin_pb2.ModelReload:
    return admin_pb2.ModelReload(
        name=change.name, outcome=_OUTCOME_TO_WIRE[change.outcome], error=change.error
    )
