"""`onnxplain --help` and each subcommand import only what they need.

The top-level help lists the subcommands from onnxplain/cli.py's table, so that it does not
import onnx, onnxruntime, grpc, torch or scipy (all of them made `--help` take 5-10 s on a
loaded machine); a subcommand imports its own module only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from onnxplain import cli

HEAVY = ("onnx", "onnxruntime", "grpc", "torch", "scipy", "numpy")
PROBE = """
import runpy, sys
sys.argv = ["onnxplain", *{argv!r}]
try:
    runpy.run_module("onnxplain", run_name="__main__")
except SystemExit:
    pass
print(",".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def _imported(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=list(argv))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.strip().splitlines()[-1].split(","))


def test_top_level_help_imports_no_heavy_package() -> None:
    imported = _imported("--help")
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_convert_help_does_not_import_the_server_or_grpc() -> None:
    imported = _imported("convert", "--help")
    assert "onnx" in imported  # its own module was imported
    assert "grpc" not in imported


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {choice.dest: choice.help for choice in sub._choices_actions}  # type: ignore[misc]


def test_the_table_help_texts_are_the_modules_own() -> None:
    assert _helps(cli.build_parser("")) == _helps(cli.build_parser())


@pytest.mark.parametrize("command", ["convert", "check", "serve", "explain", "models", "sanity"])
def test_each_subcommand_parses_with_only_its_module(command: str) -> None:
    full = cli.build_parser()
    lazy = cli.build_parser(command)
    argv = {
        "convert": ["convert", "in.onnx", "-o", "out.onnx"],
        "check": ["check", "in.onnx"],
        "serve": ["serve", "--models", "models"],
        "explain": ["explain", "--model", "digits", "-o", "out.png", "x.png"],
        "models": ["models"],
        "sanity": ["sanity", "models/shapes"],
    }[command]
    want, got = vars(full.parse_known_args(argv)[0]), vars(lazy.parse_known_args(argv)[0])
    assert want.keys() == got.keys()
    assert {k: v for k, v in want.items() if k != "func"} == {
        k: v for k, v in got.items() if k != "func"
    }
