"""The paper's comparison figure for one input: input | vanilla | deconvnet | guided, as a PNG.

Runs the explain models in-process, from the same model repository the server reads:

    python scripts/figure.py models/digits/samples/digit3.png -o figure.png
    python scripts/figure.py IMAGE --models DIR --model NAME --target K --scale 24 -o OUT.png

Each panel shows the saliency magnitude (max |gradient| over channels), scaled to its own
maximum, as the heatmap the service returns.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxplain.graph_rewrite import METHODS
from onnxplain.server import ExplainCall, Explainer, Repository, SessionFactory
from onnxplain.server.imaging import heatmap
from PIL import Image, ImageDraw

CAPTION = 14  # pixels of caption strip under each panel
GAP = 4


def input_panel(path: Path, size: tuple[int, int], scale: int) -> Image.Image:
    image = Image.open(path).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return image.resize((size[0] * scale, size[1] * scale), Image.Resampling.NEAREST)


def compose(panels: list[tuple[str, Image.Image]]) -> Image.Image:
    width, height = panels[0][1].size
    sheet = Image.new("RGB", (len(panels) * (width + GAP) - GAP, height + CAPTION), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, panel) in enumerate(panels):
        x = i * (width + GAP)
        sheet.paste(panel, (x, 0))
        draw.text((x + 2, height + 1), title, fill="black")
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="a PNG or JPEG input")
    parser.add_argument("-o", "--output", type=Path, default=Path("figure.png"))
    # The repo's own models/ by default, wherever the script is run from.
    parser.add_argument(
        "--models", type=Path, default=Path(__file__).resolve().parent.parent / "models"
    )
    parser.add_argument("--model", default="digits")
    parser.add_argument("--target", type=int, default=None, help="class (default: top)")
    parser.add_argument("--scale", type=int, default=16, help="pixels per input pixel")
    args = parser.parse_args()

    core = Explainer(Repository.load(args.models, SessionFactory("cpu")))
    pre = core.repository.get(args.model).config.preprocessing
    if pre is None:
        parser.error(f"model {args.model} has no [preprocessing] in its config.toml")
    data = args.image.read_bytes()
    targets = [] if args.target is None else [args.target]
    panels = [("input", input_panel(args.image, (pre.width, pre.height), args.scale))]
    label = ""
    for method in METHODS:
        result = core.explain(ExplainCall(args.model, data, method, targets))
        panels.append((method, heatmap(result.saliency[0], pre.layout, args.scale)))
        label = result.labels[0] if result.labels else str(result.targets[0])
    compose(panels).save(args.output)
    print(f"wrote {args.output}: saliency of class {label} by {', '.join(METHODS)}")


if __name__ == "__main__":
    main()
