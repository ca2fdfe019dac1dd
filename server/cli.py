"""`onnxplain serve`: the Explain service over a model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import metrics
from .app import Limits, build_server
from .explainer import Explainer
from .lifecycle import Signals, serve_until_signal
from .reload import Reloader, snapshot
from .repository import DeviceUnavailable, FailedModel, Repository, SessionFactory

log = logging.getLogger("onnxplain.server")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the models in a folder over gRPC")
    p.add_argument("--models", type=Path, required=True, help="folder of <name>/model.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=50051, help="port (default 50051; 0 picks one)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per run (0: all)")
    p.add_argument("--max-message-mb", type=float, default=16.0, help="request/response limit")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch one request may send")
    p.add_argument("--max-concurrent", type=int, default=8, help="explanations run at once")
    p.add_argument("--drain-delay", type=float, default=1.0, help="seconds NOT_SERVING before stop")
    p.add_argument("--grace", type=float, default=30.0, help="seconds in-flight calls may take")
    p.add_argument(
        "--poll",
        type=_positive,
        metavar="SECONDS",
        help="also reload the model folder every SECONDS (SIGHUP and the admin RPC always do)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST is --host)",
    )
    p.set_defaults(func=run_serve)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # From here on a signal is kept for the main loop instead of killing a half-built server.
    with Signals() as signals:
        return _serve(args, signals)


def _serve(args: argparse.Namespace, signals: Signals) -> int:
    if args.metrics_port is not None:
        try:
            _, port = metrics.serve(args.host, args.metrics_port)
        except OSError as exc:
            print(f"onnxplain serve: metrics port {args.metrics_port}: {exc}", file=sys.stderr)
            return 2
        log.info("metrics on http://%s:%d/metrics", args.host, port)
    try:
        sessions = SessionFactory(args.device, args.threads)
        loaded = snapshot(args.models) if args.models.is_dir() else {}
        repository = Repository.load(args.models, sessions)
    except (DeviceUnavailable, FileNotFoundError) as exc:
        print(f"onnxplain serve: {exc}", file=sys.stderr)
        return 2
    failed = [n for n in repository.names() if isinstance(repository.entry(n), FailedModel)]
    if repository.names() and len(failed) == len(repository.names()):
        log.warning("no model loaded from %s; the server answers ListModels only", args.models)
    reloader = Reloader(args.models, repository, sessions, loaded)
    core = Explainer(repository, max_batch=args.max_batch, max_concurrent=args.max_concurrent)
    limits = Limits(int(args.max_message_mb * 1024 * 1024), args.max_concurrent)
    try:
        service = build_server(core, args.host, args.port, limits, reloader)
    except OSError as exc:
        print(f"onnxplain serve: {exc} (is another process using the port?)", file=sys.stderr)
        return 2
    # Tests and scripts read this line to learn the port when --port 0 is given.
    print(f"onnxplain serve: listening on {args.host}:{service.port}", flush=True)
    serve_until_signal(service, signals, args.drain_delay, args.grace, reloader, args.poll)
    return 0
