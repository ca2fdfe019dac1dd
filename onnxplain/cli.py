"""The `onnxplain` command: one subcommand per job, each defined beside the code it drives."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# Each module defines `add_commands(subparsers)`; its subcommands set `func(args) -> int`.
# Beside each: the subcommands it defines with their one-line help, and the extra that
# installs what they import, so a missing extra still lists the subcommand and says what to
# install. Only the module of the subcommand asked for is imported: `onnxplain --help`
# lists the subcommands from this table, without onnx, onnxruntime, grpc or scipy (that
# took 5-10 s on a loaded machine). tests/test_cli_lazy.py keeps the help texts equal to
# the modules' own.
_COMMAND_MODULES: tuple[tuple[str, dict[str, str], str | None], ...] = (
    (
        "onnxplain.graph_rewrite.cli",
        {
            "convert": "write the explain model (prediction + saliency) of an ONNX model",
            "check": "say whether convert will succeed, without writing anything",
        },
        None,
    ),
    ("onnxplain.server.cli", {"serve": "serve the models in a folder over gRPC"}, "serve"),
    (
        "onnxplain.client.cli",
        {
            "explain": "ask a server for a saliency map",
            "models": "list the models a server offers",
        },
        "serve",
    ),
    (
        "onnxplain.sanity.cli",
        {
            "sanity": "does each method's map change when the weights are randomised? "
            "(Adebayo et al.)"
        },
        "sanity",
    ),
)
DESCRIPTION = "Saliency maps for ONNX models (`onnxplain convert --help` lists the methods)."
# What each extra's commands import first, looked up (not imported) so that the top-level
# help can mark a subcommand whose extra is missing.
_EXTRA_MODULES = {
    "serve": ("grpc", "grpc_health", "grpc_reflection", "PIL"),
    "sanity": ("grpc", "PIL", "scipy", "skimage"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (`command` given) one whose only real subcommand is that one;
    the others are listed by name and help without importing their modules."""
    parser = argparse.ArgumentParser(prog="onnxplain", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name, commands, extra in _COMMAND_MODULES:
        if command is not None and command not in commands:
            missing = _missing_module(_EXTRA_MODULES.get(extra or "", ()))
            for name, help_text in commands.items():
                if extra and missing:
                    _add_unavailable(sub, name, extra, missing)
                else:
                    sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # A third-party module missing: the extra is absent or half installed. Keep the
            # subcommands, which then say what to install; onnxplain's own modules are a bug.
            if extra is None or not exc.name or exc.name.split(".")[0] == "onnxplain":
                raise
            for name in commands:
                _add_unavailable(sub, name, extra, exc.name)
            continue
        module.add_commands(sub)
    return parser


def _missing_module(names: Sequence[str]) -> str:
    """The first of `names` that cannot be imported ("" for none), without importing any."""
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return ""


def _command_in(argv: Sequence[str]) -> str:
    """The subcommand named in argv ("" for none: top-level help or a usage error)."""
    known = {name for _, commands, _ in _COMMAND_MODULES for name in commands}
    words = [w for w in argv if not w.startswith("-")]
    return words[0] if words and words[0] in known else ""


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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    # Known-args parsing, so that `serve --models x` reaches the missing-extra message
    # instead of an "unrecognized arguments" error from the stand-in subcommand.
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
