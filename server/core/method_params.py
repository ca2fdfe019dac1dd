"""A request's method parameters → the explain model to run and what to feed it.

Everything here reads the method's registry entry (graph_rewrite/methods/base.py), never a
method's name. A GRAPH parameter changes the explain model: each value is its own session
(built on first use, repository.py), so the given ones are part of the session's key. A
RUN_TIME parameter is fed when the model runs (SmoothGrad's noise, drawn from a seed, or a
baseline tensor): the method's own `feeds` hook turns them into the model's extra inputs,
and one session serves every value.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnxplain.graph_rewrite import RewriteError
from onnxplain.graph_rewrite.methods import GRAPH, MethodSpec, RunFeeds

from .errors import InvalidInput

# One explain run holds samples (or steps) x batch copies of the input: bounded, as the
# batch is, so that one request cannot take the server's memory.
MAX_COPIES = 1024

GraphParams = tuple[tuple[str, Hashable], ...]  # sorted (name, value): part of a session's key


@dataclass(frozen=True)
class MethodParams:
    """A request's parameters checked against its method."""

    graph: GraphParams  # the graph parameters given, other than their defaults
    resolved: Mapping[str, Any]  # every parameter, defaults filled in


def method_params(spec: MethodSpec, given: Mapping[str, Any]) -> MethodParams:
    """`given` checked against `spec`: InvalidInput naming a parameter the method does not
    take, a value of the wrong type, or one it refuses."""
    takes = [p.name for p in spec.params]
    stray = sorted(set(given) - set(takes))
    if stray:
        takes_text = ", ".join(takes) or "no parameters"
        raise InvalidInput(f"method {spec.name!r} takes no {stray[0]!r} (it takes: {takes_text})")
    given = dict(given)
    for name, value in (spec.implied(given) if spec.implied else {}).items():
        if given.get(name) is not None and given[name] != value:
            raise InvalidInput(
                f"method {spec.name!r}: parameter {name!r} is {value!r} with the "
                f"parameters given, not {given[name]!r}"
            )
        given[name] = value
    try:
        resolved = spec.resolve(given)
    except RewriteError as exc:  # names the parameter and what it takes
        raise InvalidInput(str(exc)) from None
    graph = tuple(
        sorted(
            (p.name, resolved[p.name])
            for p in spec.params
            if p.kind == GRAPH and given.get(p.name) is not None and resolved[p.name] != p.default
        )
    )
    return MethodParams(graph, resolved)


def run_feeds(spec: MethodSpec, params: MethodParams, x: np.ndarray) -> RunFeeds:
    """The run-time parameters as the explain model's extra inputs (the method's `feeds`
    hook), after the copies of the input they ask for are checked against MAX_COPIES."""
    if spec.copies is not None:
        name, copies = spec.copies(params.resolved)
        check_copies(copies, len(x), name)
    if spec.feeds is None:
        return RunFeeds()
    try:
        return spec.feeds(params.resolved, x)
    except (ValueError, RewriteError) as exc:
        raise InvalidInput(f"method {spec.name!r}: {exc}") from None


def check_copies(copies: int, batch: int, what: str) -> None:
    """As Triton answers a batch over max_batch_size: INVALID_ARGUMENT, naming the cap."""
    if copies < 1:
        raise InvalidInput(f"{what} must be at least 1, not {copies}")
    if copies * batch > MAX_COPIES:
        raise InvalidInput(
            f"{what} x batch is {copies} x {batch} = {copies * batch} copies of the input; "
            f"this server runs at most {MAX_COPIES} in one explanation"
        )
