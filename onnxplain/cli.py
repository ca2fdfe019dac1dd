"""The `onnxplain` command: one subcommand per job, each defined beside the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines `add_commands(subparsers)`; its subcommands set `func(args) -> int`.
# Beside each: the subcommands it defines and the extra that installs what they import, so a
# missing extra still lists the subcommand and says what to install.
_COMMAND_MODULES: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("onnxplain.graph_rewrite.cli", ("convert", "check"), None),
    ("onnxplain.server.cli", ("serve",), "serve"),
    ("onnxplain.client.cli", ("explain", "models"), "serve"),
    ("onnxplain.sanity.cli", ("sanity",), "sanity"),
)


def build_parser() -> argparse.ArgumentParser:
    from onnxplain.graph_rewrite.methods import REGISTRY  # the core's; every extra has it

    parser = argparse.ArgumentParser(
        prog="onnxplain",
        description=f"Saliency maps for ONNX models, by the methods {', '.join(REGISTRY)}.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name, commands, extra in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # A third-party module missing: the extra is absent or half installed. Keep the
            # subcommands, which then say what to install; onnxplain's own modules are a bug.
            if extra is None or not exc.name or exc.name.split(".")[0] == "onnxplain":
                raise
            for command in commands:
                _add_unavailable(sub, command, extra, exc.name)
            continue
        module.add_commands(sub)
    return parser


def _add_unavailable(
    sub: argparse._SubParsersAction, command: str, extra: str, missing: str
) -> None:
    hint = f"pip install 'onnxplain[{extra}]'"
    p = sub.add_parser(
        command, help=f"(needs {hint})", description=f"Needs the {extra} extra: {hint}"
    )

    def explain_missing(_args: argparse.Namespace) -> int:
        print(
            f"onnxplain {command}: needs the '{extra}' extra (missing module {missing!r}): {hint}",
            file=sys.stderr,
        )
        return 2

    p.set_defaults(func=explain_missing, unavailable=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Known-args parsing, so that `serve --models x` reaches the missing-extra message
    # instead of an "unrecognized arguments" error from the stand-in subcommand.
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
