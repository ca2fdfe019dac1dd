"""The web page's targets beyond a class: a box drawn on the image explains a segmenter's
region or a detector's prediction, a position a recogniser's step, and a detector's own top
detections are listed to pick from. The JSON API answers what the gRPC core answers for the
same target (the core's own tests hold it to float64 autograd and pytorch-grad-cam); in
Chromium a box drawn with the mouse is sent in the model input's pixels and gets its map."""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import numpy as np
import pytest
import torch
from onnxplain.server import Explainer, Repository, SessionFactory
from onnxplain.server.core.explainer import ExplainCall
from onnxplain.server.core.region_targets import Box, RegionTarget
from onnxplain.server.protocols.web import WebPage, start_web_page
from PIL import Image

from helpers.target_models import Segmenter, YoloV8Head, images, seeded, write_model

CHROMIUM = "/usr/bin/chromium"
RGB = "[preprocessing]\nheight = {0}\nwidth = {0}\nmean = [0.5]\nstd = [0.25]\n"


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Explainer:
    root: Path = tmp_path_factory.mktemp("models")
    write_model(
        root / "seg", seeded(Segmenter()), torch.from_numpy(images((1, 3, 16, 16))), RGB.format(16)
    )
    detector = RGB.format(32) + '[detection]\nlayout = "yolov8"\nmin_score = 0.3\n'
    write_model(
        root / "det",
        seeded(YoloV8Head(), seed=2, std=0.15),
        torch.from_numpy(images((1, 3, 32, 32))),
        detector,
    )
    return Explainer(Repository.load(root, SessionFactory("cpu", threads=1)), max_batch=4)


@pytest.fixture(scope="module")
def web(core: Explainer) -> Iterator[WebPage]:
    page = start_web_page(core, "127.0.0.1", 0, max_upload=1 << 20)
    yield page
    page.stop()


def upload(size: int = 48) -> bytes:
    pixels = np.random.default_rng(4).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def post(web: WebPage, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
    url = f"{web.scheme}://127.0.0.1:{web.port}/api/explain?{query}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_models_say_which_targets_the_page_offers(web: WebPage) -> None:
    url = f"{web.scheme}://127.0.0.1:{web.port}/api/models"
    with urllib.request.urlopen(url, timeout=30) as r:
        listing = {m["name"]: m for m in json.loads(r.read())["models"]}
    assert listing["seg"]["target_kinds"] == ["region"] and listing["seg"]["input_size"] == [16, 16]
    assert listing["det"]["target_kinds"] == ["detection"]


def test_a_region_box_is_the_cores_region_target(web: WebPage, core: Explainer) -> None:
    status, answer = post(
        web, "model=seg&method=vanilla&region_box=2,3,10,9&region_classes=1", upload()
    )
    assert status == 200, answer
    (row,) = answer["explained"]
    assert row["index"] == 1 and row["probability"] is None
    direct = core.explain(
        ExplainCall(
            "seg", upload(), "vanilla", target=RegionTarget(box=Box(2, 3, 10, 9), classes=[1])
        )
    )
    assert row["score"] == pytest.approx(float(direct.target_scores[0]), rel=1e-6)


def test_a_detector_lists_its_top_detections_and_explains_a_picked_one(web: WebPage) -> None:
    status, answer = post(web, "model=det&method=vanilla&top=1", upload(64))
    assert status == 200, answer
    found = answer["detections"]
    assert 1 <= len(found) <= 5
    assert [d["score"] for d in found] == sorted((d["score"] for d in found), reverse=True)
    best = found[0]
    box = ",".join(f"{v:.3f}" for v in best["box"])
    status, picked = post(web, f"model=det&method=vanilla&detection_box={box}", upload(64))
    assert status == 200, picked
    (explained,) = picked["explained_detections"]
    assert explained["index"] == best["index"] and explained["iou"] > 0.99
    assert picked["explained"][0]["index"] == best["class"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("model=seg&region_box=1,2,3", "a box is x0,y0,x1,y1"),
        ("model=seg&region_box=1,2,3,4&position=2", "not region_box and position"),
        ("model=seg&region_box=1,2,3,4&region_classes=x", "region_classes must be whole numbers"),
        ("model=det&detection_box=0,0,1,1", "no prediction overlaps the box"),
    ],
)
def test_bad_targets_are_a_400_that_says_why(web: WebPage, query: str, message: str) -> None:
    status, answer = post(web, query, upload())
    assert status == 400 and message in answer["error"], answer


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


def test_a_box_drawn_in_chromium_gets_its_map(web: WebPage, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    image = tmp_path / "scene.png"
    image.write_bytes(upload())
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/explain" in r.url else None)
    page.goto(f"{web.scheme}://127.0.0.1:{web.port}/")
    page.select_option("#model", "seg")
    expect(page.locator("#box-target")).to_be_visible()
    page.set_input_files("#image", str(image))
    preview = page.locator("#preview")
    expect(preview).to_be_visible()
    page.wait_for_function("() => document.getElementById('preview').complete")
    area = preview.bounding_box()
    assert area is not None
    # From a quarter in to three quarters across and 60% down: in the 16x16 input, 4,4 to 12,9.6.
    page.mouse.move(area["x"] + area["width"] * 0.25, area["y"] + area["height"] * 0.25)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.5, area["y"] + area["height"] * 0.4)
    page.mouse.move(area["x"] + area["width"] * 0.75, area["y"] + area["height"] * 0.6)
    page.mouse.up()
    expect(page.locator("#drawn-box")).to_be_visible()
    assert "(input pixels)" in page.locator("#box-value").inner_text()
    page.select_option("#target", "2")
    page.select_option("#method", "vanilla")
    page.click("#explain")
    page.wait_for_selector("#result", state="visible", timeout=60_000)
    maps = page.locator("figure.map")
    expect(maps).to_have_count(1)
    assert "no probability" in maps.first.locator("figcaption").inner_text()
    # The page sent the drawn box in the 16x16 input's pixels: a quarter in to three
    # quarters across and 60% down is 4,4 to 12,9.6 (give or take the pointer's pixel).
    (url,) = sent
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["region_classes"] == "2" and "detection_box" not in query
    drawn = [float(v) for v in query["region_box"].split(",")]
    np.testing.assert_allclose(drawn, [4, 4, 12, 9.6], atol=0.3)
    # Its map is the API's for that box.
    status, answer = post(web, urlsplit(url).query, image.read_bytes())
    assert status == 200, answer
    src = maps.first.locator("img.overlay").get_attribute("src")
    assert src == answer["explained"][0]["overlay_png"]
    page.screenshot(path=str(tmp_path / "box.png"), full_page=True)
    assert errors == []
    page.close()


def test_a_detection_picked_in_chromium_is_explained(
    web: WebPage, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    image = tmp_path / "scene.png"
    image.write_bytes(upload(64))
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/explain" in r.url else None)
    page.goto(f"{web.scheme}://127.0.0.1:{web.port}/")
    page.select_option("#model", "det")
    page.set_input_files("#image", str(image))
    page.select_option("#method", "vanilla")
    page.click("#explain")
    picks = page.locator("#detection-list button")
    expect(picks.first).to_be_visible(timeout=60_000)
    _, listed = post(web, urlsplit(sent[0]).query, image.read_bytes())
    best = listed["detections"][0]
    picks.first.click()
    expect(page.locator("#drawn-box")).to_be_visible()
    page.wait_for_function("() => document.querySelectorAll('figure.map').length === 1")
    query = dict(parse_qsl(urlsplit(sent[-1]).query))
    np.testing.assert_allclose(
        [float(v) for v in query["detection_box"].split(",")], best["box"], atol=0.01
    )
    _, answer = post(web, urlsplit(sent[-1]).query, image.read_bytes())
    assert answer["explained_detections"][0]["index"] == best["index"]
    src = page.locator("figure.map img.overlay").get_attribute("src")
    assert src == answer["explained"][0]["overlay_png"]
    assert errors == []
    page.close()


def test_a_painted_mask_is_the_cores_mask_png_target(web: WebPage, core: Explainer) -> None:
    mask = np.zeros((16, 16), np.uint8)
    mask[5:12, 2:7] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    data = quote("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    status, answer = post(
        web, f"model=seg&method=vanilla&region_classes=0&region_mask={data}", upload()
    )
    assert status == 200, answer
    direct = core.explain(
        ExplainCall(
            "seg", upload(), "vanilla", target=RegionTarget(mask_png=buffer.getvalue(), classes=[0])
        )
    )
    assert answer["explained"][0]["score"] == pytest.approx(
        float(direct.target_scores[0]), rel=1e-6
    )
    status, answer = post(web, "model=seg&region_mask=%25%25", upload())
    assert status == 400 and "region_mask must be a PNG in base64" in answer["error"]


def test_a_region_painted_in_chromium_gets_its_map(
    web: WebPage, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    image = tmp_path / "scene.png"
    image.write_bytes(upload())
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/explain" in r.url else None)
    page.goto(f"{web.scheme}://127.0.0.1:{web.port}/")
    page.select_option("#model", "seg")
    page.set_input_files("#image", str(image))
    page.wait_for_function("() => document.getElementById('preview').complete")
    page.check("#paint")
    area = page.locator("#preview").bounding_box()
    assert area is not None
    page.mouse.move(area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.7, area["y"] + area["height"] * 0.5, steps=8)
    page.mouse.up()
    expect(page.locator("#painted")).to_be_visible()
    page.select_option("#method", "vanilla")
    page.click("#explain")
    expect(page.locator("figure.map")).to_have_count(1, timeout=60_000)
    query = dict(parse_qsl(urlsplit(sent[-1]).query))
    assert "region_box" not in query and query["region_mask"].startswith("data:image/png;base64,")
    painted = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(query["region_mask"].split(",", 1)[1]))).convert("L")
    )
    # A horizontal stroke across the middle of the 16x16 input: painted there, not at the top.
    assert painted.shape == (16, 16) and painted[8, 8] > 128 and painted[:3].max() == 0
    _, answer = post(web, urlsplit(sent[-1]).query, image.read_bytes())
    src = page.locator("figure.map img.overlay").get_attribute("src")
    assert src == answer["explained"][0]["overlay_png"]
    assert errors == []
    page.close()
