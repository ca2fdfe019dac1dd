"""The `onnxplain` command: one subcommand per job, each defined beside the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines `add_commands(subparsers)`; its subcommands set `func(args) -> int`.
_COMMAND_MODULES = (
    "onnxplain.graph_rewrite.cli",  # convert, check
    "onnxplain.server.cli",  # serve
    "onnxplain.client.cli",  # explain, models
    "onnxplain.sanity.cli",  # sanity
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxplain",
        description="Saliency maps (vanilla gradient, deconvnet, guided backprop) for ONNX models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # The service and client need the [serve] extra; the rewrite pass does not.
            if exc.name and exc.name.split(".")[0] in {"grpc", "google", "PIL", "grpc_health"}:
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
