"""Explain sessions of the newer methods, one per (method, graph parameters), built when a
request first asks for one and kept up to a bound, least recently used first out.

Start-up then costs nothing per method: a repository of M models no longer holds
M x (methods x parameter choices) sessions, only those that requests use.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import onnx
import onnxruntime as ort
from onnxplain.graph_rewrite import RewriteError, build_explain_model
from onnxplain.graph_rewrite.explain import default_layer

from .errors import InvalidInput
from .method_params import GraphParams

log = logging.getLogger(__name__)

# Per model: a few (method, parameters) at once; a client cycling through sigmas or step
# counts then rebuilds instead of growing the server without bound.
MAX_SESSIONS = 8

Key = tuple[str, GraphParams]


class LazySessions:
    """The explain sessions of one model's newer methods, built on first use."""

    def __init__(
        self,
        source: onnx.ModelProto,
        input_name: str,
        output_name: str,
        make_session: Callable[[onnx.ModelProto], ort.InferenceSession],
        limit: int = MAX_SESSIONS,
    ) -> None:
        self._source = source
        self.input_name = input_name
        self.output_name = output_name
        self._make = make_session
        self._limit = limit
        self._sessions: OrderedDict[Key, ort.InferenceSession] = OrderedDict()
        self._lock = threading.Lock()  # one build at a time; runs do not take it
        self._default_layer: str | None = None
        self._layer_looked_up = False

    def built(self) -> list[Key]:
        """The (method, parameters) whose sessions are held, oldest use first."""
        with self._lock:
            return list(self._sessions)

    def get(self, method: str, params: GraphParams) -> ort.InferenceSession:
        key = (method, params)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
            session = self._build(method, params)
            self._sessions[key] = session
            while len(self._sessions) > self._limit:
                self._sessions.popitem(last=False)
            return session

    def _build(self, method: str, params: GraphParams) -> ort.InferenceSession:
        try:
            explain = build_explain_model(
                self._source,
                method,
                self.input_name,
                self.output_name,
                # The server runs onnxruntime: the formulations fastest there.
                target="onnxruntime",
                params=dict(params),
            )
        except RewriteError as exc:
            # A parameter the model cannot take (a layer it does not have, a batch baked in).
            raise InvalidInput(f"method {method!r} on this model: {exc}") from None
        if self.output_name not in {o.name for o in explain.graph.output}:
            explain.graph.output.append(onnx.helper.make_empty_tensor_value_info(self.output_name))
        log.info("built the %s explain session %s", method, dict(params))
        return self._make(explain)

    def default_layer(self) -> str | None:
        """Grad-CAM's default layer, looked up once; None where the model has none."""
        with self._lock:
            if not self._layer_looked_up:
                self._layer_looked_up = True
                try:
                    self._default_layer = default_layer(
                        self._source, self.input_name, self.output_name
                    )
                except RewriteError:
                    self._default_layer = None
            return self._default_layer
