"""The web page of `onnxplain serve --http`: its JSON endpoints, its errors, and the page itself
driven in a real headless Chromium (Debian's, through Playwright).

Oracles: the demo model run straight in onnxruntime (scores, top class, softmax from scipy),
Pillow decoding the overlay, and the browser's own decoding of the image it shows.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import matplotlib
import numpy as np
import pytest
from onnxplain.graph_rewrite.methods import ALL_METHODS
from onnxplain.server import Explainer, Repository, SessionFactory
from onnxplain.server.ops.security import RECHECK_S, Security
from onnxplain.server.protocols.web import WebPage, start_web_page
from PIL import Image
from scipy.special import softmax

from helpers.certs import make_ca, make_leaf
from helpers.server_support import SAMPLES, direct_explain, make_repository

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MAX_UPLOAD = 64 * 1024
DIGIT3 = (SAMPLES / "digit3.png").read_bytes()


def _steps(*spearman_abs: float) -> list[dict[str, Any]]:
    similarity = {"spearman": 0.0, "ssim": 0.5, "hog": 0.5}
    return [
        {"layer": f"conv{i}", "depth": i + 1, "similarity": {**similarity, "spearman_abs": v}}
        for i, v in enumerate(spearman_abs)
    ]


# A stored sanity check for the demo model, as `onnxplain sanity --write` leaves it: vanilla
# passes (mean 0.4 <= 0.5), guided fails (mean 0.85), deconvnet was not checked.
SANITY = {
    "model": "digits",
    "metric": "spearman_abs",
    "max_similarity": 0.5,
    "score": "mean",
    "inputs": 2,
    "targets": [3, 7],
    "methods": [
        {"method": "vanilla", "steps": _steps(0.6, 0.2), "passed": True},
        {"method": "guided", "steps": _steps(0.9, 0.8), "passed": False},
    ],
}


# What the sample endpoints must not serve, beside the demo's PNGs and .npy tensors.
PHOTO = "photo.jpg"  # a real JPEG: served
NOT_SERVED = {
    "fake.png": "a text file named like a PNG",
    ".hidden.png": "a hidden file",
    "notes.txt": "not an image",
    "folder.png": "a folder",
    "escape.png": "a link to a PNG outside samples/",
}


def _add_odd_samples(model: Path) -> None:
    samples = model / "samples"
    photo = io.BytesIO()
    Image.open(samples / "digit5.png").convert("RGB").save(photo, format="JPEG")
    (samples / PHOTO).write_bytes(photo.getvalue())
    (samples / "fake.png").write_text("not a png")
    (samples / ".hidden.png").write_bytes((samples / "digit3.png").read_bytes())
    (samples / "notes.txt").write_text("notes")
    (samples / "folder.png").mkdir()
    (model / "outside.png").write_bytes(_png(Image.new("RGB", (3, 3), (1, 2, 3))))
    (samples / "escape.png").symlink_to(model / "outside.png")


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Explainer:
    root = make_repository(tmp_path_factory.mktemp("models"))
    (root / "digits" / "sanity.json").write_text(json.dumps(SANITY))
    _add_odd_samples(root / "digits")
    return Explainer(Repository.load(root, SessionFactory("cpu", threads=1)), max_batch=16)


@pytest.fixture(scope="module")
def web(core: Explainer) -> Iterator[WebPage]:
    page = start_web_page(core, "127.0.0.1", 0, max_upload=MAX_UPLOAD)
    yield page
    page.stop()


def _url(web: WebPage, path: str) -> str:
    return f"{web.scheme}://127.0.0.1:{web.port}{path}"


def _request(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of a GET, or of a POST when there is a body."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(web: WebPage, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
    return _request(_url(web, f"/api/explain?{query}"), body)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def _digit_tensor(name: str) -> np.ndarray:
    """The demo's preprocessing of a sample PNG, written out: gray, /255, (x-0.3)/0.4."""
    pixels = np.asarray(Image.open(SAMPLES / name).convert("L"), dtype=np.float32) / 255.0
    return ((pixels - np.float32(0.3)) / np.float32(0.4))[None, None]


# --- JSON endpoints -------------------------------------------------------------------------


def test_models_lists_loaded_and_failed_models(web: WebPage) -> None:
    with urllib.request.urlopen(_url(web, "/api/models"), timeout=10) as response:
        listing = json.loads(response.read())
    models = {m["name"]: m for m in listing["models"]}
    assert models["digits"]["available"] and models["digits"]["takes_images"]
    assert models["digits"]["labels"] == [str(d) for d in range(10)]
    assert models["digits"]["default_method"] == "guided"
    assert not models["garbage"]["available"] and models["garbage"]["error"]
    assert not models["norule"]["available"] and "Acosh" in models["norule"]["error"]
    assert listing["signs"] == ["all", "positive", "negative", "absolute"]
    assert models["digits"]["methods"] == list(ALL_METHODS)  # as ListModels offers them
    assert all(models["digits"]["method_summaries"][m] for m in ALL_METHODS)
    sanity = models["digits"]["sanity"]
    assert (sanity["metric"], sanity["max_similarity"], sanity["score"]) == (
        "spearman_abs",
        0.5,
        "mean",
    )
    assert set(sanity["methods"]) == {"vanilla", "guided"}
    assert sanity["methods"]["vanilla"]["passed"] is True
    assert sanity["methods"]["vanilla"]["spearman_abs"] == pytest.approx(0.4)
    assert sanity["methods"]["guided"]["passed"] is False
    assert sanity["methods"]["guided"]["spearman_abs"] == pytest.approx(0.85)


def _blend(image: Path, map2d: np.ndarray, cmap: str, opacity: float) -> np.ndarray:
    """The documented overlay, written out with matplotlib's colormap: the map scaled by its
    largest |value| to [-1, 1], placed on the colormap (0 in the middle), blended over the
    gray image with `opacity`."""
    gray = np.asarray(Image.open(image).convert("L"), np.float64)[..., None] / 255.0
    position = (map2d / np.abs(map2d).max() + 1.0) / 2.0
    colours = matplotlib.colormaps[cmap](position)[..., :3]
    return (1.0 - opacity) * gray + opacity * colours


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_top_classes_each_get_their_map_scores_and_probabilities(web: WebPage, method: str) -> None:
    status, result = _post(web, f"model=digits&method={method}&top=3&opacity=0.7", DIGIT3)
    assert status == 200, result
    x = _digit_tensor("digit3.png")
    _, scores, _ = direct_explain(method, x)
    best = np.argsort(-scores[0])[:3]
    probabilities = softmax(scores[0].astype(np.float64))
    assert result["method"] == method
    for listed in (result["top"], result["explained"]):  # top mode explains what it lists
        assert [c["index"] for c in listed] == list(best)
        for c in listed:
            assert c["label"] == str(c["index"])
            assert c["score"] == pytest.approx(float(scores[0, c["index"]]), rel=1e-5)
            assert c["probability"] == pytest.approx(probabilities[c["index"]], rel=1e-4, abs=1e-12)
    for row in result["explained"]:
        saliency, _, _ = direct_explain(method, x, np.array([row["index"]]))
        map2d = saliency[0, 0].astype(np.float64)
        overlay = np.asarray(_decode_data_url(row["overlay_png"]).convert("RGB"), np.float64)
        assert overlay.shape == (8, 8, 3)  # the sent image's size
        expected = _blend(SAMPLES / "digit3.png", map2d, "RdBu_r", 0.7) * 255
        # One step of the colormap's 256-entry table, and uint8 rounding.
        assert np.abs(overlay - expected).max() <= 2.0
        peak = float(np.abs(map2d).max())
        assert row["range"] == pytest.approx([-peak, peak], rel=1e-5)


def test_heatmap_controls_reach_the_map_and_its_colour_bar(web: WebPage) -> None:
    query = "model=digits&method=vanilla&target=3&sign=positive&colormap=gray&opacity=1"
    status, result = _post(web, query, DIGIT3)
    assert status == 200, result
    saliency, _, _ = direct_explain("vanilla", _digit_tensor("digit3.png"), np.array([3]))
    positive = np.maximum(saliency[0, 0].astype(np.float64), 0.0)
    (row,) = result["explained"]
    shown = np.asarray(_decode_data_url(row["overlay_png"]).convert("L"), np.float64)
    expected = matplotlib.colormaps["gray"](positive / positive.max())[..., 0] * 255
    np.testing.assert_allclose(shown, expected, atol=2.0)  # as above: a table step, rounding
    assert row["range"] == pytest.approx([0.0, positive.max()], rel=1e-5)
    bar = np.asarray(_decode_data_url(result["colour_bar_png"]).convert("L"), np.int32)[0]
    assert bar[0] <= 1 and bar[-1] >= 254 and (np.diff(bar) >= 0).all()  # black to white


def test_a_jpeg_of_another_size_and_mode_gets_its_map_at_its_own_size(web: WebPage) -> None:
    photo = Image.open(SAMPLES / "digit5.png").convert("RGB").resize((30, 20))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=95)
    status, result = _post(web, "model=digits&top=1", buffer.getvalue())
    assert status == 200, result
    overlay = _decode_data_url(result["explained"][0]["overlay_png"])
    assert overlay.size == (30, 20)


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_the_newer_methods_draw_through_the_same_page(web: WebPage, method: str) -> None:
    status, result = _post(web, f"model=digits&method={method}&top=2", DIGIT3)
    assert status == 200, result
    assert result["method"] == method and result["explained"][0]["index"] == 3
    for row in result["explained"]:
        assert _decode_data_url(row["overlay_png"]).size == (8, 8)
        assert row["range"][1] > 0


def test_a_chosen_target_is_explained_beside_the_top_classes(web: WebPage) -> None:
    status, result = _post(web, "model=digits&target=8&top=2", DIGIT3)
    assert status == 200, result
    _, scores, _ = direct_explain("guided", _digit_tensor("digit3.png"), np.array([8]))
    (row,) = result["explained"]
    assert row["index"] == 8
    assert row["score"] == pytest.approx(float(scores[0, 8]), rel=1e-5)
    assert [c["index"] for c in result["top"]] == list(np.argsort(-scores[0])[:2])


GIF = _png(Image.new("L", (4, 4))).replace(b"\x89PNG", b"GIF8", 1)


@pytest.mark.parametrize(
    ("query", "body", "status", "message"),
    [
        ("model=digits", b"this is not an image", 400, "could not be decoded as PNG or JPEG"),
        ("model=digits", b"", 400, "the upload is empty"),
        ("model=digits", b"\x00" * (MAX_UPLOAD + 1), 413, "at most 65536"),
        ("model=nope", b"x", 404, "no model named 'nope'"),
        ("model=garbage", DIGIT3, 409, "failed to load"),
        ("", DIGIT3, 400, "no model given"),
        ("model=digits&method=magic", DIGIT3, 400, "unknown method"),
        ("model=digits&target=ten", DIGIT3, 400, "whole number"),
        ("model=digits&target=10", DIGIT3, 400, "out of range"),
        ("model=digits&top=0", DIGIT3, 400, "top must be"),
        ("model=digits&top=11", DIGIT3, 400, "top_k is 11; it must be between 1 and 10"),
        ("model=digits&sign=loud", DIGIT3, 400, "unknown sign 'loud'"),
        ("model=digits&opacity=2", DIGIT3, 400, "opacity 2.0 is outside [0, 1]"),
        ("model=digits&opacity=nan", DIGIT3, 400, "opacity must be a finite number"),
        ("model=digits&percentile=high", DIGIT3, 400, "percentile must be a number"),
        ("model=digits&colormap=rainbowz", DIGIT3, 400, "unknown colormap 'rainbowz'"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(
    web: WebPage, query: str, body: bytes, status: int, message: str
) -> None:
    got, payload = _post(web, query, body)
    assert got == status and message in payload["error"], payload
    assert "Traceback" not in payload["error"]
    assert _post(web, "model=digits", (SAMPLES / "digit0.png").read_bytes())[0] == 200


def _raw(web: WebPage, request: bytes) -> str:
    """Send bytes as they are, stop sending, and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(4096), b"")).decode()


def test_a_post_without_length_and_unknown_paths_are_refused(web: WebPage) -> None:
    answer = _raw(web, b"POST /api/explain?model=digits HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith("HTTP/1.0 411") and "send the image with a Content-Length" in answer
    answer = _raw(web, b"POST /api/explain?model=digits HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
    assert answer.startswith("HTTP/1.0 400") and "ended after 3 of 100 bytes" in answer
    for path in ("/nothing", "/../server/cli.py", "/static/../../README.md"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(_url(web, path), timeout=10)
        assert caught.value.code == 404
    assert _post(web, "model=digits", (SAMPLES / "digit0.png").read_bytes())[0] == 200


# --- the model's samples -------------------------------------------------------------------


def _get_bytes(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _served_samples(core: Explainer) -> Path:
    return core.repository.get("digits").folder / "samples"


def test_samples_lists_the_models_png_and_jpeg_files_only(web: WebPage) -> None:
    status, listing = _request(_url(web, "/api/models/digits/samples"))
    assert status == 200, listing
    images = [*(p.name for p in SAMPLES.glob("*.png")), PHOTO]
    assert [s["name"] for s in listing["samples"]] == sorted(images)
    assert not set(NOT_SERVED) & {s["name"] for s in listing["samples"]}
    assert all(s["url"] == f"/api/models/digits/samples/{s['name']}" for s in listing["samples"])


def test_each_listed_sample_is_served_as_its_file(web: WebPage, core: Explainer) -> None:
    _, listing = _request(_url(web, "/api/models/digits/samples"))
    for sample in listing["samples"]:
        status, content_type, body = _get_bytes(_url(web, sample["url"]))
        assert status == 200
        assert body == (_served_samples(core) / sample["name"]).read_bytes()
        want = "image/jpeg" if sample["name"].endswith(".jpg") else "image/png"
        assert content_type == want
        Image.open(io.BytesIO(body)).verify()  # Pillow reads it as the image it claims to be


def _raw_get(web: WebPage, target: str) -> tuple[int, dict[str, Any]]:
    """A GET of `target` exactly as written (urllib and browsers would normalise `..`)."""
    answer = _raw(web, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.partition("\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        ("/api/models/digits/samples/..%2Fconfig.toml", 400, "not a sample name"),
        ("/api/models/digits/samples/..%2F..%2F..%2F..%2Fetc%2Fpasswd", 400, "not a sample name"),
        ("/api/models/digits/samples/%2Fetc%2Fpasswd", 400, "not a sample name"),
        ("/api/models/digits/samples/%2e%2e", 400, "not a sample name"),
        ("/api/models/digits/samples/..%5Cmodel.onnx", 400, "not a sample name"),
        ("/api/models/digits/samples/digit3.png%00.png", 400, "not a sample name"),
        ("/api/models/digits/samples/../config.toml", 404, "no endpoint"),
        ("/api/models/digits/samples//etc/passwd", 404, "no endpoint"),
        ("/api/models/digits/samples/digit3.npy", 400, "not a PNG or JPEG file"),
        ("/api/models/digits/samples/notes.txt", 400, "not a PNG or JPEG file"),
        ("/api/models/digits/samples/fake.png", 400, "'fake.png' is not a PNG image"),
        ("/api/models/digits/samples/.hidden.png", 400, "hidden file"),
        ("/api/models/digits/samples/folder.png", 404, "no sample 'folder.png'"),
        ("/api/models/digits/samples/escape.png", 404, "no sample 'escape.png'"),
        ("/api/models/digits/samples/missing.png", 404, "no sample 'missing.png'"),
        ("/api/models/..%2Fdigits/samples", 404, "no model named '../digits'"),
        ("/api/models/nope/samples/digit3.png", 404, "no model named 'nope'"),
        ("/api/models/garbage/samples", 409, "failed to load"),
        ("/api/models/digits/config.toml", 404, "no endpoint"),
    ],
)
def test_sample_requests_outside_the_samples_images_are_refused(
    web: WebPage, target: str, status: int, message: str
) -> None:
    got, payload = _raw_get(web, target)
    assert got == status and message in payload["error"], payload
    assert "Traceback" not in payload["error"] and "/tmp" not in payload["error"]
    assert _raw_get(web, "/api/models/digits/samples")[0] == 200  # still serving


# --- the --http flag ------------------------------------------------------------------------


def _serve(repo: Path, *flags: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "onnxplain", "serve", "--models", str(repo)]
    return subprocess.Popen(
        [*command, "--port", "0", "--threads", "1", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on, read from /proc (its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_serve_http_flag_serves_the_page_with_the_ports_security_and_is_off_by_default(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    repo = make_repository(tmp_path / "models")
    (tmp_path / "tokens").write_text("the-token\n")
    cert, key = pki["server"]
    security = ["--token-file", str(tmp_path / "tokens"), "--tls-cert", str(cert)]
    plain = _serve(repo)
    with_page = _serve(repo, "--http", "0", *security, "--tls-key", str(key))
    try:
        assert plain.stdout is not None and with_page.stdout is not None
        grpc_line = plain.stdout.readline()
        assert "listening on 127.0.0.1:" in grpc_line
        grpc_port = int(grpc_line.rsplit(":", 1)[1])
        assert _listening_ports(plain.pid) == {grpc_port}  # no page unless asked
        # Other start-up lines may come first (other flags print theirs); the page's is one.
        lines = [with_page.stdout.readline().strip() for _ in range(2)]
        while not lines[-1].startswith("onnxplain serve: web page at") and lines[-1]:
            lines.append(with_page.stdout.readline().strip())
        page_line = lines[-1]
        assert page_line.startswith("onnxplain serve: web page at https://127.0.0.1:"), lines
        url = page_line.rsplit(" ", 1)[1]
        context = _client_context(pki)
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            assert b"<title>onnxplain</title>" in response.read()
        assert _request(url + "api/models", context=context)[0] == 401
        token = {"Authorization": "Bearer the-token"}
        assert _request(url + "api/models", None, token, context)[0] == 200
    finally:
        for proc in (plain, with_page):
            proc.terminate()
            proc.wait(30)


def test_serve_http_on_a_busy_port_fails_clearly(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES.parent, tmp_path / "digits")  # only a model that loads: no log noise
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _serve(tmp_path, "--http", str(busy.getsockname()[1]))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "web page at" not in out
    assert err.strip().splitlines()[-1].startswith("onnxplain serve: web page: ")
    assert "Traceback" not in err


# --- the gRPC port's tokens and TLS hold for the page too ----------------------------------


@pytest.fixture(scope="module")
def guarded(core: Explainer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebPage]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text("first-token\n  second-token \n")
    page = start_web_page(core, security=Security.from_files(token_file=tokens))
    yield page
    page.stop()


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Basic first-token", "Bearer ", "first-token"]
)
def test_without_a_valid_token_the_api_answers_401(guarded: WebPage, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for body in (None, DIGIT3):
        path = "/api/models" if body is None else "/api/explain?model=digits"
        status, payload = _request(_url(guarded, path), body, headers)
        assert status == 401 and "needs a token" in payload["error"]
    for path in ("/api/models/digits/samples", "/api/models/digits/samples/digit3.png"):
        status, payload = _request(_url(guarded, path), None, headers)
        assert status == 401 and "needs a token" in payload["error"]
    with urllib.request.urlopen(_url(guarded, "/"), timeout=10) as page:  # the page is open
        assert b"token-form" in page.read()


@pytest.mark.parametrize("token", ["first-token", "second-token"])
def test_every_listed_token_opens_the_api(guarded: WebPage, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    assert _request(_url(guarded, "/api/models"), None, headers)[0] == 200
    assert _request(_url(guarded, "/api/models/digits/samples"), None, headers)[0] == 200
    status, _, body = _get_bytes(_url(guarded, "/api/models/digits/samples/digit3.png"), headers)
    assert (status, body) == (200, DIGIT3)
    status, result = _request(_url(guarded, "/api/explain?model=digits&top=1"), DIGIT3, headers)
    assert status == 200 and result["explained"][0]["index"] == 3


def test_a_renewed_token_file_reaches_the_page_without_a_restart(
    core: Explainer, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    page = start_web_page(core, security=Security.from_files(token_file=tokens))
    url = _url(page, "/api/models")

    def status(token: str) -> int:
        return _request(url, None, {"Authorization": f"Bearer {token}"})[0]

    try:
        assert (status("old-token"), status("new-token")) == (200, 401)
        time.sleep(RECHECK_S + 0.1)  # the file is looked at no more than once a RECHECK_S
        tokens.write_text("new-token\n")  # the old one is revoked
        assert (status("old-token"), status("new-token")) == (401, 200)
        time.sleep(RECHECK_S + 0.1)
        tokens.write_text("")  # a broken replacement is ignored: no lock-out
        assert status("new-token") == 200
    finally:
        page.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = make_ca("onnxplain test CA"), make_ca("someone else's CA")
    server = make_leaf(ca, "onnxplain server", server=True).write(folder, "server")
    return {
        "folder": folder,
        "ca": ca,
        "server": server,
        "client": make_leaf(ca, "a browser", server=False).write(folder, "client"),
        "stranger": make_leaf(other, "a stranger", server=False).write(folder, "stranger"),
    }


def _client_context(pki: dict[str, Any], cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=pki["ca"].cert_pem.decode())
    if cert is not None:
        context.load_cert_chain(*pki[cert])
    return context


def test_tls_serves_https_and_a_silent_client_does_not_stall_others(
    core: Explainer, pki: dict[str, Any]
) -> None:
    page = start_web_page(core, security=Security.from_files(*pki["server"]))
    try:
        assert page.scheme == "https"
        with socket.create_connection(("127.0.0.1", page.port)):  # connects, never handshakes
            status, _ = _request(_url(page, "/api/models"), context=_client_context(pki))
            assert status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plaintext page
            urllib.request.urlopen(f"http://127.0.0.1:{page.port}/", timeout=10)
    finally:
        page.stop()


def test_a_renewed_certificate_reaches_the_page_without_a_restart(
    core: Explainer, tmp_path: Path
) -> None:
    old_ca, new_ca = make_ca("old CA"), make_ca("new CA")
    cert, key = make_leaf(old_ca, "server", server=True).write(tmp_path, "server")
    page = start_web_page(core, security=Security.from_files(cert, key))
    url = _url(page, "/api/models")
    trusts = {
        ca: ssl.create_default_context(cadata=ca.cert_pem.decode()) for ca in (old_ca, new_ca)
    }
    try:
        assert _request(url, context=trusts[old_ca])[0] == 200
        time.sleep(RECHECK_S + 0.1)
        make_leaf(new_ca, "server", server=True).write(tmp_path, "server")
        assert _request(url, context=trusts[new_ca])[0] == 200
        with pytest.raises(urllib.error.URLError):  # the old chain is gone
            _request(url, context=trusts[old_ca])
    finally:
        page.stop()


def test_mutual_tls_wants_a_browser_certificate_from_the_ca(
    core: Explainer, pki: dict[str, Any]
) -> None:
    ca = pki["folder"] / "ca.crt"
    ca.write_bytes(pki["ca"].cert_pem)
    page = start_web_page(core, security=Security.from_files(*pki["server"], ca))
    try:
        url = _url(page, "/api/models")
        assert _request(url, context=_client_context(pki, "client"))[0] == 200
        for cert in (None, "stranger"):
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                _request(url, context=_client_context(pki, cert))
        assert _request(url, context=_client_context(pki, "client"))[0] == 200
    finally:
        page.stop()


# --- the page in a real browser -------------------------------------------------------------


def _missing(what: str) -> NoReturn:
    """A missing browser skips on a developer's machine but fails CI, where it must be installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(what)


def test_a_missing_browser_fails_under_ci_and_skips_only_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="failure, not a skip"):
        _missing("no Chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _missing("no Chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


# The page's Content-Security-Policy forbids eval, so waits run as Playwright's own
# locator checks or as functions (never strings that Playwright would have to eval).
_DECODED_WIDTH = "img => img.decode().then(() => img.naturalWidth)"
_PIXELS_OF = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
}"""


def test_the_page_shows_the_maps_and_the_classes_in_chromium(
    web: WebPage, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect  # importable: the browser fixture checked

    # An image larger than the model's input, as a user would upload it.
    upload = tmp_path / "seven.png"
    Image.open(SAMPLES / "digit7.png").resize((64, 64), Image.Resampling.NEAREST).save(upload)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(_url(web, "/"))
    expect(page.locator("#model option")).to_have_count(3)
    assert page.locator("#model").input_value() == "digits"  # the first one that loaded
    assert "unavailable" in page.locator("#model option[value=garbage]").inner_text()
    # The stored sanity check warns before anyone trusts guided backprop on this model.
    methods = page.locator("#method option")
    assert methods.all_inner_texts()[:3] == [
        "vanilla (sanity: pass)",
        "deconvnet",
        "guided (sanity: FAIL)",
    ]
    assert "gradcam" in methods.all_inner_texts()  # every method the gRPC service offers
    expect(page.locator("#sanity")).to_contain_text("vanilla passed (0.40), guided failed (0.85)")
    page.set_input_files("#image", str(upload))
    page.select_option("#method", "vanilla")
    page.fill("#percentile", "")  # the page clips at 99 by default; the API at the maximum
    page.click("#explain")
    page.wait_for_selector("#result", state="visible", timeout=30_000)
    maps = page.locator("figure.map")
    expect(maps).to_have_count(3)

    status, expected = _post(
        web, "model=digits&method=vanilla&top=3&sign=all&opacity=0.5", upload.read_bytes()
    )
    assert status == 200
    assert maps.count() == 3
    for i, row in enumerate(expected["explained"]):
        caption = maps.nth(i).locator("figcaption").inner_text()
        assert caption.startswith(f"vanilla for {row['label']} ("), caption
        # The browser decoded the map the server rendered, pixel for pixel, at the upload's size.
        image = maps.nth(i).locator("img.overlay")
        assert image.evaluate(_DECODED_WIDTH) == 64
        want = np.asarray(_decode_data_url(row["overlay_png"]).convert("RGBA")).reshape(-1)
        np.testing.assert_array_equal(np.asarray(image.evaluate(_PIXELS_OF), np.uint8), want)
    rows = page.locator("#classes tbody tr")
    assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())] == [
        c["label"] for c in expected["top"]
    ]
    assert page.locator("#classes tr.explained").count() == 3
    page.screenshot(path=str(tmp_path / "top3.png"), full_page=True)

    # One chosen class, positive evidence only: one map, its row highlighted.
    page.select_option("#target", "1")
    page.select_option("#sign", "positive")
    page.click("#explain")
    expect(maps).to_have_count(1)
    assert maps.first.locator("figcaption").inner_text().startswith("vanilla for 1 (")
    assert page.locator("#classes tr.explained").count() == 0  # 1 is not among the top 3
    page.screenshot(path=str(tmp_path / "class1.png"), full_page=True)

    # A bad upload: the page says why, and the next good one works.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#image", str(bad))
    page.click("#explain")
    page.wait_for_selector("#error", state="visible")
    assert page.locator("#error").inner_text() == (
        "400: the image could not be decoded as PNG or JPEG"
    )
    assert page.locator("#result").is_hidden()
    page.set_input_files("#image", str(upload))
    page.click("#explain")
    page.wait_for_selector("#result", state="visible")
    assert page.locator("#error").is_hidden()
    assert errors == []
    page.close()


def test_the_page_asks_for_the_token_when_the_server_wants_one(
    guarded: WebPage, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(_url(guarded, "/"))
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#model option")).to_have_count(0)
    page.fill("#token", "not-the-token")
    page.click("#use-token")
    expect(page.locator("#error")).to_have_text(
        "401: this server needs a token: send 'Authorization: Bearer <token>'"
    )
    page.fill("#token", "second-token")
    page.click("#use-token")
    expect(page.locator("#token-form")).to_be_hidden()
    expect(page.locator("#model option")).to_have_count(3)
    page.set_input_files("#image", str(SAMPLES / "digit3.png"))
    page.click("#explain")
    expect(page.locator("figure.map")).to_have_count(3)
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "token.png"), full_page=True)
    assert errors == []
    page.close()


# --- the page's preview, samples, downloads, legend and sanity note, in Chromium ------------


def _open(browser: Any, url: str, **context: Any) -> tuple[Any, list[str]]:
    """A new page at `url`, with the errors it throws collected."""
    page = browser.new_context(viewport={"width": 1100, "height": 900}, **context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def _explained(
    page: Any,
    web: WebPage,
    click: Any,
    image: bytes,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """`click()` makes the page explain `image`; the answer the API gives that request.

    The page's query is read off its request, and the same request is sent again: Playwright
    shows neither a File body nor (for a file-picker upload) the response's. The caller ties
    the two together through what the page shows (each map's data: URL)."""
    with (
        page.expect_request(lambda r: "/api/explain?" in r.url) as request,
        page.expect_response(lambda r: "/api/explain?" in r.url, timeout=60_000) as response,
    ):
        click()
    assert response.value.status == 200
    page.locator("#busy").wait_for(state="hidden")  # the answer is on the page
    url = _url(web, "/api/explain?" + request.value.url.split("?", 1)[1])
    status, result = _request(url, image, headers, context)
    assert status == 200, result
    shown = page.locator("figure.map img.overlay")
    assert [shown.nth(i).get_attribute("src") for i in range(shown.count())] == [
        row["overlay_png"] for row in result["explained"]
    ]
    return result


def test_the_preview_shows_the_chosen_file_before_anything_is_sent(
    web: WebPage, browser: Any
) -> None:
    from playwright.sync_api import expect

    upload = REPO / "models" / "shapes" / "samples" / "star.png"  # in colour: every channel
    page, errors = _open(browser, _url(web, "/"))
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/explain" in r.url else None)
    expect(page.locator("#preview-figure")).to_be_hidden()
    page.set_input_files("#image", str(upload))
    preview = page.locator("#preview")
    expect(preview).to_be_visible()
    assert preview.get_attribute("alt") == "preview of star.png, the image to explain"
    expect(page.locator("#preview-caption")).to_have_text("to explain: star.png")
    assert preview.evaluate(_DECODED_WIDTH) == 48
    want = np.asarray(Image.open(upload).convert("RGBA")).reshape(-1)
    np.testing.assert_array_equal(np.asarray(preview.evaluate(_PIXELS_OF), np.uint8), want)
    assert page.locator("#result").is_hidden() and sent == []  # nothing explained yet
    # A file the browser cannot draw says so, and Explain still asks the server.
    page.set_input_files(
        "#image", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"text"}]
    )
    expect(page.locator("#preview-caption")).to_contain_text("the browser cannot show it")
    assert errors == []
    page.context.close()


def test_a_sample_click_sends_that_file_and_shows_its_maps(
    web: WebPage, browser: Any, core: Explainer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page, errors = _open(browser, _url(web, "/"))
    buttons = page.locator("#sample-list button.sample")
    expect(buttons).to_have_count(6)  # the five digits' PNGs and the JPEG, nothing else
    assert buttons.all_inner_texts() == [
        "digit0.png",
        "digit3.png",
        "digit5.png",
        "digit7.png",
        "digit8.png",
        PHOTO,
    ]
    with page.expect_request(lambda r: "/api/explain?" in r.url) as request:
        result = _explained(
            page,
            web,
            lambda: page.get_by_role("button", name="Explain sample digit3.png").click(),
            (_served_samples(core) / "digit3.png").read_bytes(),
        )
    assert "method=guided" in request.value.url  # the model's default_method, preselected
    maps = page.locator("figure.map")
    expect(maps).to_have_count(3)
    assert result["explained"][0]["index"] == 3  # the demo reads its own sample right
    for i, row in enumerate(result["explained"]):
        assert (
            maps.nth(i).locator("figcaption").inner_text().startswith(f"guided for {row['label']}")
        )
    expect(page.locator("#preview-caption")).to_have_text("to explain: digit3.png")
    assert page.locator("#image").evaluate("input => input.files[0].name") == "digit3.png"
    page.screenshot(path=str(tmp_path / "sample.png"), full_page=True)
    assert errors == []
    page.context.close()


def test_each_maps_download_is_the_overlay_png_the_api_sent(
    web: WebPage, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page, errors = _open(browser, _url(web, "/"))
    page.set_input_files("#image", str(SAMPLES / "digit7.png"))
    page.select_option("#method", "vanilla")
    page.select_option("#sign", "positive")
    result = _explained(
        page, web, lambda: page.click("#explain"), (SAMPLES / "digit7.png").read_bytes()
    )
    links = page.locator("figure.map a.download")
    expect(links).to_have_count(3)
    for i, row in enumerate(result["explained"]):
        link = links.nth(i)
        assert (
            link.get_attribute("aria-label") == f"Download PNG: the vanilla map of {row['label']}"
        )
        with page.expect_download() as download:
            link.click()
        saved = tmp_path / f"download{i}.png"
        download.value.save_as(saved)
        sent = base64.b64decode(row["overlay_png"].removeprefix("data:image/png;base64,"))
        assert saved.read_bytes() == sent  # byte for byte what the server rendered
        assert download.value.suggested_filename == (
            f"digits_vanilla_class{row['index']}-{row['label']}_positive.png"
            if row["label"] != str(row["index"])
            else f"digits_vanilla_class{row['index']}_positive.png"
        )
        assert Image.open(saved).size == (8, 8)
    assert errors == []
    page.context.close()


def test_the_legend_says_what_the_colours_mean_for_the_sign_drawn(
    web: WebPage, browser: Any, tmp_path: Path
) -> None:
    page, errors = _open(browser, _url(web, "/"))
    page.set_input_files("#image", str(SAMPLES / "digit3.png"))
    page.select_option("#method", "vanilla")
    expected = {
        "all": "Red: raises the class's score; blue: lowers it; white: no effect.",
        "positive": "Only what raises the class's score is drawn: the deeper the red",
        "negative": "Only what lowers the class's score is drawn: the deeper the blue",
        "absolute": "either way (the sign is dropped): from dark purple (none) to yellow",
    }
    texts = {}
    for sign, says in expected.items():
        page.select_option("#sign", sign)
        result = _explained(page, web, lambda: page.click("#explain"), DIGIT3)
        legend = page.locator("#legend-text").inner_text()
        assert legend.startswith(f'Sign "{sign}": ') and says in legend, legend
        assert page.locator("#legend-bar").get_attribute("src") == result["colour_bar_png"]
        texts[sign] = legend
        page.screenshot(path=str(tmp_path / f"legend-{sign}.png"), full_page=True)
    assert len(set(texts.values())) == 4
    # A sign changed but not yet drawn leaves the legend of the maps on screen.
    page.select_option("#sign", "positive")
    assert page.locator("#legend-text").inner_text() == texts["absolute"]
    # Another colormap's colours are not named: the bar's ends are.
    page.select_option("#sign", "all")
    page.select_option("#colormap", "viridis")
    _explained(page, web, lambda: page.click("#explain"), DIGIT3)
    legend = page.locator("#legend-text").inner_text()
    assert "right end: raises the class's score" in legend and "Red" not in legend
    assert errors == []
    page.context.close()


def test_the_method_picker_states_the_stored_verdict_and_warns_on_a_failure(
    web: WebPage, browser: Any
) -> None:
    from playwright.sync_api import expect

    page, errors = _open(browser, _url(web, "/"))
    note = page.locator("#method-sanity")
    # The test repository's digits default to guided, which its stored check fails.
    assert page.locator("#method").input_value() == "guided"
    expect(note).to_have_text(
        "guided failed this model's sanity check (spearman_abs 0.85, over 0.5): its maps "
        "hardly change when the model's weights are randomised, so they show the image more "
        "than what this model learned."
    )
    expect(note).to_have_class("hint failed")
    page.select_option("#method", "vanilla")
    expect(note).to_have_text(
        "vanilla passed this model's sanity check (spearman_abs 0.40, at most 0.5)."
    )
    expect(note).to_have_class("hint")
    page.select_option("#method", "deconvnet")
    expect(note).to_have_text("deconvnet is not in this model's stored sanity check.")
    page.select_option("#model", "garbage")  # no methods, no samples, no note
    expect(note).to_have_text("")
    expect(page.locator("#samples")).to_be_hidden()
    assert errors == []
    page.context.close()


def test_the_shapes_demo_page_preselects_a_method_that_passed_and_maps_differ_by_class(
    browser: Any, tmp_path: Path
) -> None:
    """Issue 21: the demo's page opened on guided backprop, which failed its sanity check and
    drew the same map for each of the three classes."""
    from playwright.sync_api import expect

    (tmp_path / "models").mkdir()
    shutil.copytree(REPO / "models" / "shapes", tmp_path / "models" / "shapes")  # no links out
    core = Explainer(
        Repository.load(tmp_path / "models", SessionFactory("cpu", threads=1)), max_batch=8
    )
    web = start_web_page(core)
    try:
        page, errors = _open(browser, _url(web, "/"))
        default = core.repository.get("shapes").config.default_method
        assert page.locator("#method").input_value() == default
        expect(page.locator("#method-sanity")).to_contain_text(
            f"{default} passed this model's sanity check"
        )
        result = _explained(
            page,
            web,
            lambda: page.get_by_role("button", name="Explain sample triangle.png").click(),
            (REPO / "models" / "shapes" / "samples" / "triangle.png").read_bytes(),
        )
        assert result["explained"][0]["label"] == "triangle"
        maps = [
            np.asarray(_decode_data_url(r["overlay_png"]).convert("RGB"))
            for r in result["explained"]
        ]
        assert not np.array_equal(maps[0], maps[1]) and not np.array_equal(maps[0], maps[2])
        page.screenshot(path=str(tmp_path / "shapes.png"), full_page=True)
        page.select_option("#method", "guided")
        expect(page.locator("#method-sanity")).to_contain_text("guided failed this model's")
        assert errors == []
        page.context.close()
    finally:
        web.stop()


def test_over_https_with_a_token_samples_maps_and_downloads_work(
    core: Explainer, browser: Any, pki: dict[str, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    tokens = tmp_path / "tokens"
    tokens.write_text("page-token\n")
    security = Security.from_files(*pki["server"], token_file=tokens)
    web = start_web_page(core, security=security)
    try:
        # The test CA is not the browser's: its certificate errors are waived, TLS stays on.
        page, errors = _open(browser, _url(web, "/"), ignore_https_errors=True)
        assert page.url.startswith("https://")
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#samples")).to_be_hidden()
        page.fill("#token", "page-token")
        page.click("#use-token")
        expect(page.locator("#sample-list button.sample")).to_have_count(6)
        result = _explained(
            page,
            web,
            lambda: page.get_by_role("button", name="Explain sample digit8.png").click(),
            (SAMPLES / "digit8.png").read_bytes(),
            {"Authorization": "Bearer page-token"},
            _client_context(pki),
        )
        with page.expect_download() as download:
            page.locator("figure.map a.download").first.click()
        saved = tmp_path / "map.png"
        download.value.save_as(saved)
        sent = result["explained"][0]["overlay_png"].removeprefix("data:image/png;base64,")
        assert saved.read_bytes() == base64.b64decode(sent)
        page.screenshot(path=str(tmp_path / "https.png"), full_page=True)
        assert errors == []
        page.context.close()
    finally:
        web.stop()
