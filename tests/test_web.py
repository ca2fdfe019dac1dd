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
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from onnxplain.server import Explainer, Repository, SessionFactory
from onnxplain.server.web import WebPage, start_web_page
from PIL import Image
from scipy.special import softmax

from test_server_support import SAMPLES, direct_explain, make_repository

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


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebPage]:
    root = make_repository(tmp_path_factory.mktemp("models"))
    core = Explainer(Repository.load(root, SessionFactory("cpu", threads=1)), max_batch=4)
    page = start_web_page(core, "127.0.0.1", 0, max_upload=MAX_UPLOAD)
    yield page
    page.stop()


def _url(web: WebPage, path: str) -> str:
    return f"http://127.0.0.1:{web.port}{path}"


def _post(web: WebPage, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(_url(web, f"/api/explain?{query}"), data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


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
        models = {m["name"]: m for m in json.loads(response.read())["models"]}
    assert models["digits"]["available"] and models["digits"]["takes_images"]
    assert models["digits"]["labels"] == [str(d) for d in range(10)]
    assert models["digits"]["default_method"] == "guided"
    assert not models["garbage"]["available"] and models["garbage"]["error"]
    assert not models["norule"]["available"] and "Sin" in models["norule"]["error"]


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_explain_gives_the_models_own_scores_and_map(web: WebPage, method: str) -> None:
    status, result = _post(
        web, f"model=digits&method={method}&top=10", (SAMPLES / "digit3.png").read_bytes()
    )
    assert status == 200, result
    x = _digit_tensor("digit3.png")
    saliency, scores, targets = direct_explain(method, x)
    assert result["method"] == method
    assert result["target"]["index"] == int(targets[0]) == 3
    probabilities = softmax(scores[0].astype(np.float64))
    listed = result["top"]
    assert [c["index"] for c in listed] == list(np.argsort(-scores[0]))
    for c in listed:
        assert c["label"] == str(c["index"])
        assert c["score"] == pytest.approx(float(scores[0, c["index"]]), rel=1e-5)
        assert c["probability"] == pytest.approx(probabilities[c["index"]], rel=1e-4, abs=1e-12)
    overlay = _decode_data_url(result["overlay_png"])
    assert overlay.size == (8, 8)
    # Brightest map pixel is where the oracle's saliency is largest.
    red = np.asarray(overlay.convert("RGB"), dtype=np.int32).sum(axis=2)
    peak = np.unravel_index(np.abs(saliency[0, 0]).argmax(), (8, 8))
    assert red[peak] == red.max()


def test_a_chosen_target_is_explained_and_still_listed_among_the_top(web: WebPage) -> None:
    status, result = _post(
        web, "model=digits&target=8&top=2", (SAMPLES / "digit3.png").read_bytes()
    )
    assert status == 200, result
    _, scores, _ = direct_explain("guided", _digit_tensor("digit3.png"), np.array([8]))
    assert result["target"]["index"] == 8
    assert result["target"]["score"] == pytest.approx(float(scores[0, 8]), rel=1e-5)
    assert len(result["top"]) == 2 and result["top"][0]["index"] == 3


GIF = _png(Image.new("L", (4, 4))).replace(b"\x89PNG", b"GIF8", 1)


@pytest.mark.parametrize(
    ("query", "body", "status", "message"),
    [
        ("model=digits", b"this is not an image", 400, "could not be decoded as PNG or JPEG"),
        ("model=digits", b"", 400, "the upload is empty"),
        ("model=digits", b"\x00" * (MAX_UPLOAD + 1), 413, "at most 65536"),
        ("model=nope", b"x", 404, "no model named 'nope'"),
        ("model=garbage", (SAMPLES / "digit3.png").read_bytes(), 409, "failed to load"),
        ("", (SAMPLES / "digit3.png").read_bytes(), 400, "no model given"),
        ("model=digits&method=magic", (SAMPLES / "digit3.png").read_bytes(), 400, "unknown method"),
        ("model=digits&target=ten", (SAMPLES / "digit3.png").read_bytes(), 400, "whole number"),
        ("model=digits&target=10", (SAMPLES / "digit3.png").read_bytes(), 400, "out of range"),
        ("model=digits&top=0", (SAMPLES / "digit3.png").read_bytes(), 400, "top must be"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(
    web: WebPage, query: str, body: bytes, status: int, message: str
) -> None:
    got, payload = _post(web, query, body)
    assert got == status and message in payload["error"], payload
    assert "Traceback" not in payload["error"]
    assert _post(web, "model=digits", (SAMPLES / "digit0.png").read_bytes())[0] == 200


def test_a_post_without_length_and_unknown_paths_are_refused(web: WebPage) -> None:
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(b"POST /api/explain?model=digits HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(4096).decode()
    assert head.startswith("HTTP/1.0 411") and "Content-Length" in head
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(b"POST /api/explain?model=digits HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.0 400") and "ended after 3 of 100 bytes" in answer
    for path in ("/nothing", "/../server/cli.py", "/static/../../README.md"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(_url(web, path), timeout=10)
        assert caught.value.code == 404
    assert _post(web, "model=digits", (SAMPLES / "digit0.png").read_bytes())[0] == 200


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


def test_serve_http_flag_serves_the_page_and_is_off_by_default(tmp_path: Path) -> None:
    repo = make_repository(tmp_path)
    plain, with_page = _serve(repo), _serve(repo, "--http", "0")
    try:
        assert plain.stdout is not None and with_page.stdout is not None
        grpc_line = plain.stdout.readline()
        assert "listening on 127.0.0.1:" in grpc_line
        grpc_port = int(grpc_line.rsplit(":", 1)[1])
        assert _listening_ports(plain.pid) == {grpc_port}  # no page unless asked
        assert "listening on 127.0.0.1:" in with_page.stdout.readline()
        page_line = with_page.stdout.readline().strip()
        assert page_line.startswith("onnxplain serve: web page at http://127.0.0.1:"), page_line
        url = page_line.rsplit(" ", 1)[1]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"<title>onnxplain</title>" in response.read()
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


def test_the_page_shows_the_map_and_the_classes_in_chromium(
    web: WebPage, browser: Any, tmp_path: Path
) -> None:
    # An image larger than the model's input, as a user would upload it.
    upload = tmp_path / "seven.png"
    Image.open(SAMPLES / "digit7.png").resize((64, 64), Image.Resampling.NEAREST).save(upload)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(_url(web, "/"))
    page.wait_for_function("document.querySelectorAll('#model option').length === 3")
    assert page.locator("#model").input_value() == "digits"  # the first one that loaded
    assert "unavailable" in page.locator("#model option[value=garbage]").inner_text()
    page.set_input_files("#image", str(upload))
    page.select_option("#method", "vanilla")
    page.click("#explain")
    page.wait_for_selector("#result", state="visible", timeout=30_000)
    page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")

    status, expected = _post(web, "model=digits&method=vanilla&top=5", upload.read_bytes())
    assert status == 200
    assert page.locator("#overlay-caption").inner_text() == (
        f"vanilla, class {expected['target']['label']}"
    )
    rows = page.locator("#classes tbody tr")
    assert rows.count() == 5
    assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(5)] == [
        c["label"] for c in expected["top"]
    ]
    assert page.locator("#classes tr.explained td").nth(0).inner_text() == str(
        expected["target"]["index"]
    )
    # The browser decoded the map the server rendered, pixel for pixel.
    shown = page.evaluate(
        """() => {
            const img = document.getElementById('overlay');
            const canvas = document.createElement('canvas');
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0);
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            return {width: canvas.width, height: canvas.height, rgba: Array.from(data)};
        }"""
    )
    want = _decode_data_url(expected["overlay_png"]).convert("RGBA")
    assert (shown["width"], shown["height"]) == want.size
    np.testing.assert_array_equal(np.asarray(shown["rgba"], np.uint8), np.asarray(want).reshape(-1))
    assert page.locator("#original").evaluate("img => img.naturalWidth") == 64
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

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
