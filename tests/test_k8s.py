"""The Kubernetes manifests in deploy/k8s, checked as far as a machine without a cluster allows.

- Every manifest is valid for a current Kubernetes (PyPI kubernetes-validate, strict: an
  unknown or misspelt field fails), and the validator is shown to reject broken ones.
- The pieces fit together: the container's args parse with onnxplain's own parser, probes are
  native gRPC probes on the port --health-port opens, the files the args name are mounted,
  the Services, autoscaler and disruption budget select the Deployment's pods, the pod runs as
  the Dockerfile's non-root user with a read-only root filesystem and a writable /tmp where the
  image's HOME, TMPDIR and XDG_CACHE_HOME point.
- The container's args really serve: `onnxplain serve` runs with them (mount paths mapped to
  temp folders, ports to free ones), a kubelet-style plaintext probe gets SERVING, a TLS client
  with a token gets an explanation, Prometheus can scrape the call's count, and under strace
  the server writes nothing outside /tmp.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnxplain.client import Client, Retry

from onnxplain.cli import build_parser

from helpers.certs import make_ca, make_leaf
from helpers.server_support import DEMO, SAMPLES
from helpers.tools import missing, require_module

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.37.0"  # the newest schema kubernetes-validate 1.37 ships
FILES = sorted(p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml"))
DEPLOYMENTS = ("deployment.yaml", "gpu/deployment.yaml")


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return doc


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    c: dict[str, Any] = only
    return c


def options(c: dict[str, Any]) -> dict[str, str]:
    """The container's `--flag=value` args (and bare switches, as "") as a mapping."""
    pairs = [(*arg.split("=", 1), "")[:2] for arg in c["args"]]
    assert all(flag.startswith("--") for flag, _ in pairs), c["args"]
    return {flag: value for flag, value in pairs}


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV settings."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, re.M):
        env.update(pair.split("=", 1) for pair in line.split())
    return env


# --- schema --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kv() -> Any:
    return require_module("kubernetes_validate", "pip install kubernetes-validate")


@pytest.mark.parametrize("name", FILES)
def test_manifest_is_valid_for_current_kubernetes(kv: Any, name: str) -> None:
    assert kv.validate(load(name), KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_broken_manifests(kv: Any) -> None:
    misspelt = load("deployment.yaml")
    c = container(misspelt)
    c["readinesProbe"] = c.pop("readinessProbe")
    wrong_type = load("deployment.yaml")
    container(wrong_type)["livenessProbe"]["grpc"]["port"] = "health"  # gRPC probes take numbers
    for broken in (misspelt, wrong_type):
        with pytest.raises(kv.ValidationError):
            kv.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_required_kind_is_there() -> None:
    kinds = {(load(n)["kind"], n) for n in FILES}
    assert {k for k, _ in kinds} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    }


# --- how the pieces fit ----------------------------------------------------------------------


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_the_server_accepts_the_container_args(name: str) -> None:
    args = build_parser().parse_args(["serve", *container(load(name))["args"]])
    assert args.func.__name__ == "run_serve"
    assert args.host == "0.0.0.0" and args.health_port is not None


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_probes_are_native_grpc_on_the_health_port(name: str) -> None:
    c = container(load(name))
    opts = options(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {
        "grpc": int(opts["--port"]),
        "health": int(opts["--health-port"]),
        "metrics": int(opts["--metrics-port"]),
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == ports["health"], probe
        assert set(c[probe]) & {"httpGet", "tcpSocket", "exec"} == set(), probe
    # TLS is on, and Kubernetes' gRPC probes cannot do TLS: they must use the plaintext port.
    assert "--tls-cert" in opts and ports["health"] != ports["grpc"]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_pod_runs_non_root_with_a_read_only_root(name: str) -> None:
    pod = load(name)["spec"]["template"]["spec"]
    c = container(load(name))
    user = re.findall(r"^USER\s+(\d+):(\d+)", DOCKERFILE.read_text(), re.M)[-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(user[0]),
        int(user[1]),
    )
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_writable_paths_of_the_image_are_on_the_tmp_volume(name: str) -> None:
    pod = load(name)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [
        m["mountPath"] for m in container(load(name))["volumeMounts"] if not m.get("readOnly")
    ]
    assert writable == ["/tmp"]
    (tmp,) = (m for m in container(load(name))["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]
    env = dockerfile_env()
    for key in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
        assert env[key] == "/tmp" or env[key].startswith("/tmp/"), key
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_files_the_args_name_are_mounted_read_only(name: str) -> None:
    deployment = load(name)
    c = container(deployment)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    opts = options(c)
    expected = {
        "--models": "persistentVolumeClaim",
        "--tls-cert": "secret",
        "--tls-key": "secret",
        "--token-file": "secret",
    }
    for flag, kind in expected.items():
        path = Path(opts[flag])
        mount = next(m for p, m in mounts.items() if path == Path(p) or Path(p) in path.parents)
        assert mount.get("readOnly") is True, flag
        assert kind in volumes[mount["name"]], flag
    claim = volumes[mounts[opts["--models"]]["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == load("models-pvc.yaml")["metadata"]["name"]
    assert load("models-pvc.yaml")["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_services_autoscaler_and_budget_select_the_pods() -> None:
    deployment = load("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for name in ("service.yaml", "service-headless.yaml"):
        service = load(name)
        assert service["spec"]["selector"].items() <= labels.items(), name
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] == "grpc"
    assert load("service-headless.yaml")["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in load("service.yaml")["spec"]
    pdb = load("pdb.yaml")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    hpa = load("hpa.yaml")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # The budget leaves a pod serving: at most one of at least two down.
    assert pdb["maxUnavailable"] == 1 and hpa["minReplicas"] >= 2
    # Utilization is measured against requests: the pods must request CPU.
    assert container(deployment)["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_the_grace_period_covers_the_drain(name: str) -> None:
    deployment = load(name)
    opts = options(container(deployment))
    drain = float(opts["--drain-delay"]) + float(opts["--grace"])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain


def test_gpu_variant_differs_only_in_its_gpu_parts() -> None:
    cpu, gpu = load("deployment.yaml"), load("gpu/deployment.yaml")
    c = container(gpu)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert options(c)["--device"] == "cuda" and c["image"].endswith(":gpu")
    assert options(container(cpu))["--device"] == "cpu" and container(cpu)["image"].endswith(":cpu")
    # Remove exactly the GPU parts; what is left must be the CPU Deployment.
    stripped = copy.deepcopy(gpu)
    pod = stripped["spec"]["template"]["spec"]
    assert [t["key"] for t in pod.pop("tolerations")] == ["nvidia.com/gpu"]
    sc = container(stripped)
    del sc["resources"]["limits"]["nvidia.com/gpu"]
    sc["image"] = container(cpu)["image"]
    sc["args"] = [a.replace("--device=cuda", "--device=cpu") for a in sc["args"]]
    assert stripped == cpu


# --- the args, served for real ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A call that writes, its directory argument (AT_FDCWD or a descriptor, which strace -y
# prints with its path: 6</some/dir>) and its path argument.
_WRITING_CALL = re.compile(
    r"^\d+\s+(openat|open|creat|mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|link|linkat"
    r'|symlink|symlinkat|truncate)\((?:(AT_FDCWD(?:<[^>]*>)?|\d+<[^>]*>), )?"([^"]+)"(.*)$'
)


def _writes(trace: Path, cwd: Path) -> list[str]:
    """Absolute paths the traced processes created, opened for writing, renamed or removed."""
    found = []
    for line in trace.read_text(errors="replace").splitlines():
        match = _WRITING_CALL.match(line)
        if not match or " = -1 " in line:
            continue
        call, folder, path, rest = match.groups()
        if call in ("openat", "open") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT", rest):
            continue
        if not path.startswith("/"):
            base = folder[folder.index("<") + 1 : -1] if folder and "<" in folder else str(cwd)
            path = f"{base}/{path}"
        found.append(path)
    return found


def test_the_container_args_serve_tls_tokens_and_a_plaintext_probe(tmp_path: Path) -> None:
    c = container(load("deployment.yaml"))
    # Every mount becomes a temp folder; the working directory stands for the read-only root.
    where = {m["mountPath"]: tmp_path / m["name"] for m in c["volumeMounts"]}
    for folder in [*where.values(), tmp_path / "root"]:
        folder.mkdir()
    ca = make_ca("cluster CA")
    server_pair = make_leaf(ca, "onnxplain", server=True)
    (where["/etc/onnxplain/tls"] / "tls.crt").write_bytes(server_pair.cert_pem)
    (where["/etc/onnxplain/tls"] / "tls.key").write_bytes(server_pair.key_pem)
    (where["/etc/onnxplain/token"] / "tokens").write_text("k8s-token\n")
    (where["/models"] / "digits").mkdir()
    for name in ("model.onnx", "config.toml", "labels.txt"):
        (where["/models"] / "digits" / name).write_bytes((DEMO / name).read_bytes())

    def mapped(value: str) -> str:
        for mount, folder in where.items():
            if value == mount or value.startswith(mount + "/"):
                return str(folder) + value[len(mount) :]
        return value

    port, health_port, metrics_port = _free_port(), _free_port(), _free_port()
    overrides = {"--host": "127.0.0.1", "--port": str(port), "--health-port": str(health_port),
                 "--metrics-port": str(metrics_port), "--drain-delay": "0"}  # fmt: skip
    args = [f"{k}={overrides.get(k, mapped(v))}" if v else k for k, v in options(c).items()]
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "TMPDIR", "XDG_CACHE_HOME")}
    env.update({k: mapped(v) for k, v in dockerfile_env().items() if k != "PATH"})
    command = [sys.executable, "-m", "onnxplain", "serve", *args]
    trace = tmp_path / "trace.txt"
    strace = shutil.which("strace")
    if strace and subprocess.run([strace, "-qq", "-o", os.devnull, "true"]).returncode != 0:
        strace = None  # present, but ptrace is not permitted here
    if strace:
        command = [strace, "-f", "-qq", "-y", "-o", str(trace), "--", *command]
    proc = subprocess.Popen(
        command, cwd=tmp_path / "root", env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, proc.stderr.read() if proc.stderr else ""
        # What the kubelet does: plaintext Check, no token, on the health port.
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # What a client in the cluster does: TLS with the cluster's CA, and a token.
        with Client(
            f"127.0.0.1:{port}", root_ca=ca.cert_pem, token="k8s-token", retry=Retry(total_s=0)
        ) as client:
            result = client.explain("digits", SAMPLES / "digit3.png", heatmap=True)
        assert result.heatmap_png and result.saliency.shape[-2:] == (8, 8)
        # What Prometheus does: plain HTTP, no credentials; the call above is counted.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            scraped = r.read().decode()
        assert 'model="digits"' in scraped
    finally:
        _terminate(proc, strace is not None)
    if not strace:
        missing("strace is missing or cannot trace (apt-get install strace; allow ptrace)")
    written = _writes(trace, tmp_path / "root")
    assert written, "strace saw no writes at all: the audit itself is broken"
    allowed = (str(where["/tmp"]) + "/", "/dev/")
    outside = sorted({p for p in written if not p.startswith(allowed)})
    assert outside == [], f"the server wrote outside /tmp: {outside}"


def _terminate(proc: subprocess.Popen[str], traced: bool) -> None:
    """SIGTERM the server (under strace: strace's child), then wait for both."""
    pid = proc.pid
    if traced:
        deadline = time.monotonic() + 10
        children: list[str] = []
        while not children and time.monotonic() < deadline:
            tasks = Path(f"/proc/{proc.pid}/task")
            children = [c for t in tasks.iterdir() for c in (t / "children").read_text().split()]
        pid = int(children[0])
    os.kill(pid, signal.SIGTERM)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        # A lost SIGTERM (issue 12's first point, tested where signals are handled): the
        # trace is complete either way.
        os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=20)
