"""`onnxplain serve`: the Explain service over a model repository."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from .core import imaging
from .core.batching import QueueLimits
from .core.explainer import Explainer
from .ops import metrics
from .ops.lifecycle import Signals, serve_until_signal
from .ops.reload import Reloader, snapshot
from .ops.security import Security, SecurityConfigError, health_server
from .protocols.grpc.app import Limits, build_server
from .protocols.web import start_web_page
from .store.repository import DeviceUnavailable, FailedModel, Repository, SessionFactory

log = logging.getLogger("onnxplain.server")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the models in a folder over gRPC")
    p.add_argument("--models", type=Path, required=True, help="folder of <name>/model.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=50051, help="port (default 50051; 0 picks one)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per run (0: all)")
    p.add_argument(
        "--spinning",
        action="store_true",
        help="let onnxruntime's threads spin for work while a run is in flight (CPU): lower "
        "latency where runs never overlap (one model, --max-concurrent 1), less throughput "
        "where they do",
    )
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
    p.add_argument(
        "--max-image-megapixels",
        type=_positive_number,
        default=imaging.DEFAULT_MAX_PIXELS / 1e6,
        metavar="MP",
        help="largest image decoded, in megapixels; a larger one is INVALID_ARGUMENT, "
        "refused from its header before any pixel is decompressed (default %(default)g)",
    )
    p.add_argument(
        "--http",
        type=int,
        metavar="PORT",
        help="also serve HTTP: the web page, the Open Inference Protocol's REST API (/v2) and "
        "KServe V1 (/v1/models/NAME:explain) (default off)",
    )
    p.add_argument(
        "--poll",
        type=_positive,
        metavar="SECONDS",
        help="also reload the model folder every SECONDS (SIGHUP always does)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP)",
    )
    p.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="address the metrics endpoint binds (default: --host)",
    )
    _add_security_args(p)
    p.set_defaults(func=run_serve)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _add_security_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security (default: plaintext, no authentication)")
    g.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS")
    g.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    g.add_argument("--tls-client-ca", type=Path, help="PEM CA: demand client certificates (mTLS)")
    g.add_argument(
        "--token-file",
        type=Path,
        help="accepted bearer tokens, one per line: every call but health must send one",
    )
    g.add_argument(
        "--reflection",
        action="store_true",
        help="serve gRPC server reflection, for grpcurl and other tools without the .proto "
        "(default off; behind --token-file when one is given)",
    )
    g.add_argument(
        "--admin",
        action="store_true",
        help="serve onnxplain.v1.AdminService (ReloadModels); needs --token-file unless "
        "--host is a loopback address (default off; SIGHUP and --poll reload without it)",
    )
    g.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also serve grpc.health.v1 alone, in plaintext, on this port (for probes that "
        "cannot do TLS, such as Kubernetes' gRPC probes)",
    )


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # From here on a signal is kept for the main loop instead of killing a half-built server.
    with Signals() as signals:
        return _serve(args, signals)


def _serve(args: argparse.Namespace, signals: Signals) -> int:
    if args.admin and args.token_file is None and not _is_loopback(args.host):
        print(
            f"onnxplain serve: --admin on --host {args.host} without --token-file would let "
            "anyone who reaches the port reload the models: add --token-file, or bind a "
            "loopback --host (SIGHUP and --poll reload without --admin)",
            file=sys.stderr,
        )
        return 2
    if args.metrics_port is not None:
        host = args.metrics_host or args.host
        try:
            _, port = metrics.serve(host, args.metrics_port)
        except OSError as exc:
            print(f"onnxplain serve: metrics port {args.metrics_port}: {exc}", file=sys.stderr)
            return 2
        log.info("metrics on http://%s:%d/metrics", host, port)
    imaging.set_max_pixels(max(1, int(args.max_image_megapixels * 1e6)))
    try:
        security = Security.from_files(
            args.tls_cert, args.tls_key, args.tls_client_ca, args.token_file
        )
    except SecurityConfigError as exc:
        print(f"onnxplain serve: {exc}", file=sys.stderr)
        return 2
    try:
        sessions = SessionFactory(args.device, args.threads, args.spinning)
        loaded = snapshot(args.models) if args.models.is_dir() else {}
        repository = Repository.load(args.models, sessions)
    except (DeviceUnavailable, FileNotFoundError) as exc:
        print(f"onnxplain serve: {exc}", file=sys.stderr)
        return 2
    failed = [n for n in repository.names() if isinstance(repository.entry(n), FailedModel)]
    if repository.names() and len(failed) == len(repository.names()):
        log.warning("no model loaded from %s; the server answers ListModels only", args.models)
    if not repository.names():
        # Serving anyway: a volume may be mounted, or models copied in, after the start;
        # clients are told (`onnxplain models` says so and exits 1).
        log.warning(
            "serving no model yet: models added to %s later load on a reload "
            "(SIGHUP, --poll, or ReloadModels with --admin)",
            args.models,
        )
    serving = len(repository.names()) - len(failed)
    if args.spinning and (args.max_concurrent > 1 or serving > 1):
        log.warning(
            "--spinning with %s: runs that overlap slow each other down (their threads spin "
            "on the same cores); it pays where one run is in flight at a time",
            f"--max-concurrent {args.max_concurrent}"
            if args.max_concurrent > 1
            else f"{serving} models",
        )
    reloader = Reloader(args.models, repository, sessions, loaded)
    queue = QueueLimits(
        max_queue=args.max_queue,
        instances=args.max_concurrent,
        max_rows=args.batch_rows,
        max_delay_s=args.batch_delay_us / 1e6,
    )
    core = Explainer(repository, max_batch=args.max_batch, queue=queue)
    limits = Limits(int(args.max_message_mb * 1024 * 1024), args.max_concurrent)
    try:
        service = build_server(
            core,
            args.host,
            args.port,
            limits,
            reloader if args.admin else None,  # the admin service; SIGHUP and --poll use it too
            security,
            with_reflection=args.reflection,
        )
        health_only = (
            None
            if args.health_port is None
            else health_server(service.health, args.host, args.health_port)
        )
    except OSError as exc:
        print(f"onnxplain serve: {exc} (is another process using the port?)", file=sys.stderr)
        return 2
    # Tests and scripts read this line to learn the port when --port 0 is given.
    print(f"onnxplain serve: listening on {args.host}:{service.port}", flush=True)
    log.info("security: %s", security.describe())
    if health_only is not None:
        log.info("health alone, plaintext, on %s:%d", args.host, args.health_port)
    web = None
    if args.http is not None:
        try:
            web = start_web_page(core, args.host, args.http, limits.max_message_bytes, security)
        except (OSError, SecurityConfigError) as exc:
            service.server.stop(None)
            if health_only is not None:
                health_only.stop(None)
            why = "" if isinstance(exc, SecurityConfigError) else " (is the port in use?)"
            print(f"onnxplain serve: web page: {exc}{why}", file=sys.stderr)
            return 2
        print(f"onnxplain serve: web page at {web.scheme}://{args.host}:{web.port}/", flush=True)
    serve_until_signal(service, signals, args.drain_delay, args.grace, reloader, args.poll)
    if health_only is not None:
        health_only.stop(None)
    if web is not None:
        web.stop()
    return 0
