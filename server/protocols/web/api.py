"""The page's JSON endpoints as plain functions: parameters in, core called, a dict out.

Nothing here knows about HTTP either: errors are the core's own (`server.errors`), and
`httpd` maps them to status codes in one place, as `app.STATUS_OF` does for gRPC. Every
number and picture comes from the core (`Explainer`) and the shared renderer
(`onnxplain.render`); this module only picks what the page shows.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from onnxplain.graph_rewrite.methods import REGISTRY, method_names
from onnxplain.render import SIGNS, HeatmapOptions, colour_range, render_heatmap, scale_map, to_2d
from onnxplain.render import png_bytes as render_png
from onnxplain.sanity import SanityReport, summarise

from ...core.errors import InvalidInput, ModelNotFound
from ...core.explainer import ExplainCall, Explainer, Explanation
from ...core.targets import MAX_TOP_K, row_stats
from ...store.repository import FailedModel
from . import method_params, page_targets

# Classes explained (top mode) and listed when the request does not say.
DEFAULT_TOP = 3
# Colour bars are drawn from the colormap itself, this many steps wide.
_BAR_STEPS = 256


def list_models(core: Explainer) -> dict[str, Any]:
    """What the page's pickers need: names, whether they load, methods, labels, signs."""
    models = []
    for name in core.repository.names():
        entry = core.repository.entry(name)
        if isinstance(entry, FailedModel):
            models.append({"name": name, "available": False, "error": entry.error})
            continue
        config = entry.config
        models.append(
            {
                "name": name,
                "available": True,
                "takes_images": config.preprocessing is not None,
                "input": str(entry.input),
                "output": str(entry.output),
                "classes": entry.output.classes,
                "labels": list(config.labels),
                # As ListModels: every registered method, each with its own defaults here.
                "methods": list(method_names()),
                "method_summaries": {m: REGISTRY[m].summary for m in method_names()},
                # Each method's parameters from the registry, for the page's controls.
                "method_params": method_params.listing(),
                "default_method": config.default_method,
                # The targets beyond a class the page offers (a drawn box, a position), and
                # the input's size in pixels, to which a drawn box is scaled.
                "target_kinds": page_targets.kinds(entry),
                "input_size": (
                    None
                    if config.preprocessing is None
                    else [config.preprocessing.height, config.preprocessing.width]
                ),
                "sanity": None if entry.sanity is None else _sanity(entry.sanity),
            }
        )
    return {"models": models, "signs": list(SIGNS), "max_top": MAX_TOP_K}


def _sanity(report: SanityReport) -> dict[str, Any]:
    """The stored sanity check (Adebayo et al.), one verdict and score per method, so that the
    page can warn before a user trusts a method whose maps ignore the weights."""
    return {
        "metric": report.metric,
        "max_similarity": report.max_similarity,
        "score": report.score,
        "methods": {
            r.method: {"passed": r.passed, **summarise(r.steps, report.score)}
            for r in report.methods
        },
    }


def explain(core: Explainer, params: Mapping[str, str], image: bytes) -> dict[str, Any]:
    """Explain one uploaded image: the chosen class, or the `top` best classes, one map each,
    and the model's `top` best classes with their scores and probabilities."""
    model = params.get("model", "")
    if not model:
        raise InvalidInput("no model given; pick one of the models the page lists")
    if not image:
        raise InvalidInput("the upload is empty; choose a PNG or JPEG image")
    target = _number(params, "target", int, "the target class")
    top = _number(params, "top", int, "the number of top classes")
    if top is None:
        classes = core.repository.get(model).output.classes
        top = min(DEFAULT_TOP, classes or DEFAULT_TOP)
    if not 1 <= top <= MAX_TOP_K:
        raise InvalidInput(f"top must be between 1 and {MAX_TOP_K}; got {top}")
    options = heatmap_options(params)
    method = params.get("method") or None
    seed_target = page_targets.target_from_query(params)
    if seed_target is not None:
        target = None
    result = core.explain(
        ExplainCall(
            model=model,
            input=image,
            method=method,
            params=method_params.from_query(params, method or _default_method(core, model)),
            targets=() if target is None else (target,),
            top_k=top if target is None and seed_target is None else 0,
            target=seed_target,
            heatmap=True,
            heatmap_options=options,
        )
    )
    loaded = core.repository.get(model)
    pre = loaded.config.preprocessing
    layout = pre.layout if pre is not None else "NCHW"
    labels = loaded.config.labels
    flat = result.scores.reshape(result.scores.shape[0], -1)
    best = np.argsort(-flat[0], kind="stable")[:top]
    scores, probabilities = row_stats(flat, np.zeros(len(best), np.int64), best)
    hw = (pre.height, pre.width) if pre is not None else (0, 0)
    return {
        "detections": page_targets.top_detections(loaded, result, hw),
        "explained_detections": [
            {"index": d.index, "box": [d.box.x0, d.box.y0, d.box.x1, d.box.y1], "iou": d.iou}
            for d in result.detections
        ],
        "method": result.method,
        "outputs": method_params.outputs_json(result.outputs),
        "explained": [_row(result, i, labels, layout, options) for i in range(len(result.targets))],
        "top": [
            _class(int(c), labels, float(s), float(p))
            for c, s, p in zip(best, scores, probabilities)
        ],
        "colour_bar_png": _data_url(colour_bar(options)),
    }


def _default_method(core: Explainer, model: str) -> str:
    return core.repository.get(model).config.default_method


def heatmap_options(params: Mapping[str, str]) -> HeatmapOptions:
    """The renderer's options from the page's controls; its own checks say what is wrong."""
    opacity = _number(params, "opacity", float, "opacity")
    try:
        return HeatmapOptions(
            sign=params.get("sign") or "all",  # type: ignore[arg-type]  # checked by HeatmapOptions
            opacity=0.5 if opacity is None else opacity,
            colormap=params.get("colormap") or None,
            percentile=_number(params, "percentile", float, "the clipping percentile"),
        )
    except ValueError as exc:
        raise InvalidInput(f"heatmap: {exc}") from None


def colour_bar(options: HeatmapOptions) -> bytes:
    """The colormap from its low end to its high end, as the heatmaps use it: a strip of
    the renderer's own output for a ramp that spans the sign's whole range."""
    ramp = np.linspace(-1.0 if options.sign == "all" else 0.0, 1.0, _BAR_STEPS)
    if options.sign == "negative":  # drawn by strength: 0 at the left, most negative right
        ramp = -ramp
    plain = dataclasses.replace(options, percentile=None, overlay=False)
    return render_png(render_heatmap(ramp[None, :], plain))


def _row(
    result: Explanation, row: int, labels: tuple[str, ...], layout: str, options: HeatmapOptions
) -> dict[str, Any]:
    """One explained class: its map over the image, and the saliency at the bar's two ends."""
    scaled = scale_map(to_2d(result.saliency[row], layout), options.sign, options.percentile)
    low, high = colour_range(scaled)
    target = int(result.targets[row])
    return {
        **_class(
            target, labels, float(result.target_scores[row]), float(result.probabilities[row])
        ),
        "overlay_png": _data_url(result.heatmaps_png[row]),
        "range": [low, high],
    }


def _class(index: int, labels: tuple[str, ...], score: float, probability: float) -> dict[str, Any]:
    # -1: a row of no one class (a region of all classes); its probability is none (NaN,
    # which JSON cannot carry: null).
    label = labels[index] if 0 <= index < len(labels) else str(index) if index >= 0 else "region"
    shown = None if np.isnan(probability) else probability
    return {"index": index, "label": label, "score": score, "probability": shown}


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _number(params: Mapping[str, str], key: str, kind: type[Any], what: str) -> Any:
    value = params.get(key, "").strip()
    if not value:
        return None
    try:
        number = kind(value)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise InvalidInput(f"{what} must be {noun}; got {value!r}") from None
    if kind is float and not np.isfinite(number):
        raise InvalidInput(f"{what} must be a finite number; got {value!r}")
    return number


# --- sample images: the model folder's samples/, offered as one-click inputs ---------------

SAMPLES_FOLDER = "samples"
# What the page may fetch from samples/: images it can show and the core can decode. The
# bytes must agree with the name, so a renamed .npy or text file is not served as a picture.
_SAMPLE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}


class SampleNotFound(ModelNotFound):
    """The model has no such sample; a 404, as a missing model is (httpd maps the base)."""


def list_samples(core: Explainer, model: str) -> dict[str, Any]:
    """The model's sample images, by file name, each with the URL that serves it."""
    folder = _samples_folder(core, model)
    names = []
    if folder.is_dir():
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            try:
                _sample_path(folder, path.name)
            except (InvalidInput, SampleNotFound):
                continue  # not an image the page may show: left out of the list
            names.append(path.name)
    base = f"/api/models/{quote(model, safe='')}/samples/"
    return {
        "model": model,
        "samples": [{"name": n, "url": base + quote(n, safe="")} for n in names],
    }


def sample(core: Explainer, model: str, name: str) -> tuple[bytes, str]:
    """One sample's bytes and content type. `name` is a file name in samples/, nothing more:
    a path, a hidden file or another type is refused (InvalidInput), a missing file or a
    link leading out of the folder is not found (SampleNotFound)."""
    path = _sample_path(_samples_folder(core, model), name)
    return path.read_bytes(), _SAMPLE_TYPES[path.suffix.lower()]


def _samples_folder(core: Explainer, model: str) -> Path:
    # Only a model that loaded: its samples are inputs for explaining it.
    return core.repository.get(model).folder / SAMPLES_FOLDER


def _sample_path(folder: Path, name: str) -> Path:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise InvalidInput(f"{name!r} is not a sample name: give a file name from samples/")
    if name.startswith("."):
        raise InvalidInput(f"{name!r} is a hidden file; samples are PNG or JPEG files")
    content_type = _SAMPLE_TYPES.get(Path(name).suffix.lower())
    if content_type is None:
        raise InvalidInput(f"{name!r} is not a PNG or JPEG file; only images are served")
    missing = SampleNotFound(f"this model has no sample {name!r}")
    path = folder / name
    try:
        resolved = path.resolve(strict=True)
        inside = resolved.parent == folder.resolve(strict=True)
        with resolved.open("rb") as file:
            head = file.read(len(_SIGNATURES[content_type]))
    except OSError:  # missing, a folder, unreadable
        raise missing from None
    if not inside:  # a link that leads out of samples/
        raise missing
    if head != _SIGNATURES[content_type]:
        raise InvalidInput(f"{name!r} is not a {content_type.split('/')[1].upper()} image")
    return path
