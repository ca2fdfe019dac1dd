"""Each subcommand needs only what it uses; a missing extra is one line saying what to install.

Each case runs the real `onnxplain` entry point in a fresh interpreter whose import system
refuses the named modules, as on a machine where they were never installed (or where the
gRPC stack is only half there).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "digits" / "model.onnx"
HINT = "pip install 'onnxplain[serve]'"

# Refuses `blocked` (and their submodules) before any other finder is asked.
_LAUNCH = """
import sys
blocked = set(sys.argv[1].split(","))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
from onnxplain.cli import main
sys.exit(main(sys.argv[2:]))
"""


def onnxplain(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _LAUNCH, blocked, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


NO_GRPC = "grpc,grpc_health,grpc_reflection"
HALF_GRPC = "grpc_reflection"  # grpcio and health checking, no reflection
# A bare `pip install onnxplain`: none of the extras' modules.
BARE = "grpc,grpc_health,grpc_reflection,PIL,matplotlib,prometheus_client,scipy,skimage"


@pytest.mark.parametrize("blocked", [BARE, HALF_GRPC])
def test_convert_and_check_need_no_extra(blocked: str, tmp_path: Path) -> None:
    out = tmp_path / "explain.onnx"
    done = onnxplain(blocked, "convert", str(DEMO_MODEL), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    done = onnxplain(blocked, "check", str(DEMO_MODEL))
    assert done.returncode == 0 and done.stdout.startswith("ok:"), done.stderr


@pytest.mark.parametrize(
    ("blocked", "command", "missing"),
    [
        (NO_GRPC, ["serve", "--models", "models", "--port", "0"], "grpc"),
        (HALF_GRPC, ["serve", "--models", "models"], "grpc_reflection"),
        (NO_GRPC, ["explain", "--model", "digits", "x.png", "-o", "s.npy"], "grpc"),
        (NO_GRPC, ["models"], "grpc"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    blocked: str, command: list[str], missing: str
) -> None:
    done = onnxplain(blocked, *command)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"onnxplain {command[0]}: needs the 'serve' extra (missing module {missing!r}): {HINT}"
    ]


def test_help_lists_every_subcommand_with_the_hint() -> None:
    done = onnxplain(NO_GRPC, "--help")
    assert done.returncode == 0
    for command in ("convert", "check", "serve", "explain", "models"):
        assert command in done.stdout
    assert f"(needs {HINT})" in done.stdout


def test_the_client_needs_no_reflection() -> None:
    """Without grpc_reflection, `models` still runs: it reaches the network (and finds no one)."""
    done = onnxplain(HALF_GRPC, "models", "--server", "127.0.0.1:1", "--retry-for", "0")
    assert done.returncode == 1
    assert done.stderr.startswith("onnxplain models: could not reach an onnxplain server at"), (
        done.stderr
    )


def test_unknown_options_are_still_errors_where_the_extra_is_installed() -> None:
    done = onnxplain("", "check", str(DEMO_MODEL), "--no-such-flag")
    assert done.returncode == 2 and "unrecognized arguments: --no-such-flag" in done.stderr
