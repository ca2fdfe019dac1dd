"""`onnxplain explain` and `onnxplain models`: the client side of the service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .client import Client, Retry, ServiceError

DEFAULT_SERVER = "127.0.0.1:50051"


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="ask a server for a saliency map")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"HOST:PORT (default {DEFAULT_SERVER})")
    p.add_argument("--model", required=True, help="model name (see `onnxplain models`)")
    p.add_argument("--method", choices=("vanilla", "deconvnet", "guided"), default=None)
    p.add_argument("--target", type=int, default=None, help="class to explain (default: top)")
    p.add_argument("input", type=Path, help="a PNG/JPEG image or a preprocessed .npy tensor")
    p.add_argument("-o", "--output", type=Path, required=True, help=".npy saliency or .png heatmap")
    _add_connection_args(p)
    p.set_defaults(func=run_explain)

    p = sub.add_parser("models", help="list the models a server offers")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"HOST:PORT (default {DEFAULT_SERVER})")
    _add_connection_args(p)
    p.set_defaults(func=run_models)


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (default: plaintext, no token)")
    g.add_argument("--tls", action="store_true", help="speak TLS, trusting the system's CAs")
    g.add_argument("--tls-ca", type=Path, help="PEM CA of the server's certificate (implies TLS)")
    g.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mutual TLS")
    g.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    g.add_argument("--token-file", type=Path, help="file whose first line is the bearer token")
    g.add_argument(
        "--retry-for",
        type=float,
        default=Retry.total_s,
        metavar="SECONDS",
        help=f"keep retrying while the server is unavailable (default {Retry.total_s:g})",
    )


def _connect(args: argparse.Namespace) -> Client:
    """The client the connection flags describe; OSError or ValueError on a bad file."""
    token = None
    if args.token_file is not None:
        lines = args.token_file.read_text().split()
        if not lines:
            raise ValueError(f"--token-file {args.token_file} is empty")
        token = lines[0]
    return Client(
        args.server,
        tls=args.tls,
        root_ca=args.tls_ca,
        client_cert=args.tls_cert,
        client_key=args.tls_key,
        token=token,
        retry=Retry(total_s=max(0.0, args.retry_for)),
    )


def run_explain(args: argparse.Namespace) -> int:
    as_png = args.output.suffix.lower() == ".png"
    if not as_png and args.output.suffix.lower() != ".npy":
        print("onnxplain explain: -o must end in .npy or .png", file=sys.stderr)
        return 2
    try:
        with _connect(args) as client:
            result = client.explain(
                args.model, args.input, method=args.method, targets=args.target, heatmap=as_png
            )
    except (ServiceError, OSError, ValueError) as exc:
        print(f"onnxplain explain: {exc}", file=sys.stderr)
        return 1
    if as_png and result.heatmap_png is not None:
        args.output.write_bytes(result.heatmap_png)
    else:
        np.save(args.output, result.saliency)
    names = result.labels or [str(t) for t in result.targets]
    print(f"{result.method} saliency of class {', '.join(names)} written to {args.output}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    try:
        with _connect(args) as client:
            models = client.models()
    except (ServiceError, OSError, ValueError) as exc:
        print(f"onnxplain models: {exc}", file=sys.stderr)
        return 1
    for m in models:
        if not m.available:
            print(f"{m.name}\tunavailable: {m.error}")
            continue
        kind = "image or tensor" if m.takes_images else "tensor"
        print(
            f"{m.name}\tinput {list(m.input_shape)} ({kind})\toutput {list(m.output_shape)}"
            f"\t{len(m.labels)} labels\tdefault {m.default_method}"
            + (f"\tnewer files failed to load: {m.reload_error}" if m.reload_error else "")
        )
    return 0
