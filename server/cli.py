"""`onnxplain serve`: the Explain service over a model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .app import Limits, build_server, serve_until_signal
from .batching import QueueLimits
from .explainer import Explainer
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
    q = QueueLimits()
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=q.instances,
        help=f"runs of one model at once, each on --threads threads (default {q.instances})",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=q.max_queue,
        help=f"requests waiting per model; one more is RESOURCE_EXHAUSTED (default {q.max_queue})",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=q.max_rows,
        help="dynamic batching: samples of concurrent requests merged into one run "
        f"(default {q.max_rows}; 1 turns merging off)",
    )
    p.add_argument(
        "--batch-delay-us",
        type=int,
        default=int(q.max_delay_s * 1e6),
        help="dynamic batching: microseconds the oldest request waits for others to merge, "
        "as Triton's max_queue_delay_microseconds (default %(default)s: merge what is "
        "already queued)",
    )
    p.add_argument("--drain-delay", type=float, default=1.0, help="seconds NOT_SERVING before stop")
    p.add_argument("--grace", type=float, default=30.0, help="seconds in-flight calls may take")
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
    queue = QueueLimits(
        max_queue=args.max_queue,
        instances=args.max_concurrent,
        max_rows=args.batch_rows,
        max_delay_s=args.batch_delay_us / 1e6,
    )
    core = Explainer(repository, max_batch=args.max_batch, queue=queue)
    limits = Limits(int(args.max_message_mb * 1024 * 1024), args.max_concurrent)
    try:
        service = build_server(core, args.host, args.port, limits)
    except OSError as exc:
        print(f"onnxplain serve: {exc} (is another process using the port?)", file=sys.stderr)
        return 2
    # Tests and scripts read this line to learn the port when --port 0 is given.
    print(f"onnxplain serve: listening on {args.host}:{service.port}", flush=True)
    serve_until_signal(service, args.drain_delay, args.grace)
    return 0
