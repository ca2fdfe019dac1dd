"""`onnxplain explain` and `onnxplain models`: the client side of the service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .client import Client, ServiceError
from .method_options import METHOD_NAMES, add_method_options, method_options, method_report

DEFAULT_SERVER = "127.0.0.1:50051"


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="ask a server for a saliency map")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"HOST:PORT (default {DEFAULT_SERVER})")
    p.add_argument("--model", required=True, help="model name (see `onnxplain models`)")
    p.add_argument("--method", choices=METHOD_NAMES, default=None)
    add_method_options(p)
    p.add_argument("--target", type=int, default=None, help="class to explain (default: top)")
    p.add_argument("input", type=Path, help="a PNG/JPEG image or a preprocessed .npy tensor")
    p.add_argument("-o", "--output", type=Path, required=True, help=".npy saliency or .png heatmap")
    p.set_defaults(func=run_explain)

    p = sub.add_parser("models", help="list the models a server offers")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"HOST:PORT (default {DEFAULT_SERVER})")
    p.set_defaults(func=run_models)


def run_explain(args: argparse.Namespace) -> int:
    as_png = args.output.suffix.lower() == ".png"
    if not as_png and args.output.suffix.lower() != ".npy":
        print("onnxplain explain: -o must end in .npy or .png", file=sys.stderr)
        return 2
    try:
        with Client(args.server) as client:
            result = client.explain(
                args.model,
                args.input,
                method=args.method,
                targets=args.target,
                heatmap=as_png,
                **method_options(args),
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
    for line in method_report(result):
        print(line)
    return 0


def run_models(args: argparse.Namespace) -> int:
    try:
        with Client(args.server) as client:
            models = client.models()
    except ServiceError as exc:
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
        )
    return 0
