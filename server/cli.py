"""`onnxplain serve`: the Explain service over a model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .app import Limits, build_server, serve_until_signal
from .explainer import Explainer
from .repository import DeviceUnavailable, FailedModel, Repository, SessionFactory
from .web import start_web_page

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
    p.add_argument("--http", type=int, metavar="PORT", help="also serve the web page (default off)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        repository = Repository.load(args.models, SessionFactory(args.device, args.threads))
    except (DeviceUnavailable, FileNotFoundError) as exc:
        print(f"onnxplain serve: {exc}", file=sys.stderr)
        return 2
    failed = [n for n in repository.names() if isinstance(repository.entry(n), FailedModel)]
    if len(failed) == len(repository.names()):
        log.warning("no model loaded from %s; the server answers ListModels only", args.models)
    core = Explainer(repository, max_batch=args.max_batch, max_concurrent=args.max_concurrent)
    limits = Limits(int(args.max_message_mb * 1024 * 1024), args.max_concurrent)
    try:
        service = build_server(core, args.host, args.port, limits)
    except OSError as exc:
        print(f"onnxplain serve: {exc} (is another process using the port?)", file=sys.stderr)
        return 2
    # Tests and scripts read this line to learn the port when --port 0 is given.
    print(f"onnxplain serve: listening on {args.host}:{service.port}", flush=True)
    web = None
    if args.http is not None:
        try:
            web = start_web_page(core, args.host, args.http, limits.max_message_bytes)
        except OSError as exc:
            service.server.stop(None)
            print(f"onnxplain serve: web page: {exc} (is the port in use?)", file=sys.stderr)
            return 2
        print(f"onnxplain serve: web page at http://{args.host}:{web.port}/", flush=True)
    serve_until_signal(service, args.drain_delay, args.grace)
    if web is not None:
        web.stop()
    return 0
