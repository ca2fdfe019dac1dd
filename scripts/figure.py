"""The paper's comparison figure: one row per input, input | vanilla | deconvnet | guided |
Grad-CAM | Guided Grad-CAM, each map over the input with its colour bar.

Runs the explain models in-process on a model folder as the server reads it (model.onnx,
config.toml with [preprocessing], labels.txt):

    python scripts/figure.py                                  # models/shapes, its samples/
    python scripts/figure.py IMAGE... --model digits -o figure.png
    python scripts/figure.py --methods vanilla,guided --sign absolute --percentile 99

Every map is scaled to its own range (the methods differ by orders of magnitude), so the
colour bars, in saliency units, are what compare across panels.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxplain.graph_rewrite import (
    ALL_METHODS,
    GRAD_INPUT,
    SALIENCY_OUTPUT,
    build_explain_model,
    default_input,
    default_output,
)
from onnxplain.render import SIGNS, HeatmapOptions, Panel, figure, to_2d
from onnxplain.server.core.imaging import preprocess
from onnxplain.server.store.config import ModelConfig, load_config
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_METHODS = ("vanilla", "deconvnet", "guided", "gradcam", "guided_gradcam")
TITLES = {
    "vanilla": "gradient",
    "deconvnet": "deconvnet",
    "guided": "guided backprop",
    "gradcam": "Grad-CAM",
    "guided_gradcam": "Guided Grad-CAM",
    "input_x_gradient": "input × gradient",
}
# Grad-CAM upsampled bilinearly, as pytorch-grad-cam draws it: the 6x6 map of the demo
# drawn with nearest-neighbour blocks would hide where it peaks.
PARAMS = {m: {"cam_style": "pytorch-grad-cam"} for m in ("gradcam", "guided_gradcam")}
DISPLAY_SIDE = 192  # pixels of a panel's image: small inputs are enlarged for the eye


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def explain_all(
    model: onnx.ModelProto,
    config: ModelConfig,
    x: np.ndarray,
    methods: list[str],
    targets: list[int] | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Scores, targets and each method's saliency for the batch `x`."""
    input_name = config.input or default_input(model)
    output_name = config.output or default_output(model)
    out = session(model).run([output_name], {input_name: x})[0]
    scores = np.asarray(out, dtype=np.float64)
    chosen = scores.argmax(1) if targets is None else np.asarray(targets)
    seed = np.zeros(scores.shape, np.float32)
    seed[np.arange(len(x)), chosen] = 1.0
    maps = {}
    for method in methods:
        explain = build_explain_model(
            model, method, input_name, output_name, target="onnxruntime", params=PARAMS.get(method)
        )
        feeds = {input_name: x, GRAD_INPUT: seed}
        maps[method] = np.asarray(session(explain).run([SALIENCY_OUTPUT], feeds)[0])
    return scores, chosen, maps


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, nargs="*", help="PNG/JPEG (default: samples/)")
    parser.add_argument("-o", "--output", type=Path, default=Path("figure.png"))
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated")
    parser.add_argument(
        "--target", type=int, action="append", help="class per image (default: top)"
    )
    parser.add_argument("--sign", choices=SIGNS, default="all")
    parser.add_argument("--percentile", type=float, default=99.5, help="clip |map| here")
    parser.add_argument("--opacity", type=float, default=0.6)
    parser.add_argument("--dpi", type=int, default=80, help="resolution of the PNG")
    args = parser.parse_args()

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    folder = args.models / args.model
    config = load_config(folder)
    pre = config.preprocessing
    if pre is None:
        parser.error(f"model {args.model} has no [preprocessing] in its config.toml")
    paths = args.images or sorted((folder / "samples").glob("*.png"))
    if not paths:
        parser.error("no images given and the model folder has no samples/*.png")
    if args.target is not None and len(args.target) != len(paths):
        parser.error(f"give one --target per image ({len(paths)})")
    x = np.concatenate([preprocess(p.read_bytes(), pre) for p in paths])
    model = onnx.load(str(folder / "model.onnx"))
    scores, targets, maps = explain_all(model, config, x, methods, args.target)
    probs = softmax(scores)

    rows = []
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        scale = max(1, DISPLAY_SIDE // max(image.size))
        shown = image.resize((image.width * scale, image.height * scale), Image.Resampling.LANCZOS)
        k = int(targets[i])
        label = config.labels[k] if k < len(config.labels) else str(k)
        row = [Panel(f"{label} ({probs[i, k]:.0%})", image=shown)]
        row += [
            Panel(TITLES.get(m, m), map2d=to_2d(maps[m][i], pre.layout), image=shown)
            for m in methods
        ]
        rows.append(row)
    options = HeatmapOptions(sign=args.sign, opacity=args.opacity, percentile=args.percentile)
    fig = figure(rows, options)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=args.dpi)
    # No alpha channel and Pillow's optimiser: a smaller PNG, pixel for pixel the same.
    Image.open(buffer).convert("RGB").save(args.output, optimize=True)
    print(f"wrote {args.output}: {len(paths)} inputs x {', '.join(methods)} ({args.model})")


if __name__ == "__main__":
    main()
