"""Build the demo models of the targets beyond a class from the trained shapes demo
(models/shapes, scripts/train_demo_shapes.py), with no training of their own:

models/shapes_maps      the All-CNN's class maps before its global average pool, a dense
                        output [N, 6, 6, 6] (one 8x8-pixel cell each): region targets
models/shapes_detector  the same maps read as a YOLOv8-layout head [N, 4+6, 36]: one anchor
                        per cell, a fixed 16x16 box centred on it, sigmoid(map / 10 - 1)
                        of its class maps as scores (a cell's maps reach about 45 on a
                        sample's own shape, so the scores stay off the sigmoid's flat top,
                        where the gradient vanishes): detection targets

The detector's boxes are constants (the All-CNN never learnt boxes), so a detection's
saliency is that of its class score at its cell; its scores are learnt. Both are seeded by
the trained weights alone: a rerun writes the same bytes.

    python scripts/build_target_demos.py [--models models] [--figure docs/targets.png]

With --figure, also draws docs/targets.png: two samples, each with a region (the top half,
then the bottom half, of the image, for the sample's class) and a detection (the model's
best-scoring one), guided backprop, through the server's own core.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
MAPS = "/18/Conv_output_0"  # the class maps, [N, 6, 6, 6], before GlobalAveragePool
CELL = 8  # input pixels per map cell (48 / 6)
BOX = 16.0  # each anchor's box side, in input pixels

PREPROCESSING = """
[preprocessing]
height = 48
width = 48
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
layout = "NCHW"
color_mode = "RGB"
"""


def build_maps(shapes: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shapes / "model.onnx", out / "model.onnx")
    shutil.copyfile(shapes / "labels.txt", out / "labels.txt")
    (out / "config.toml").write_text(
        "# Built by scripts/build_target_demos.py: the shapes demo's class maps before its\n"
        "# global average pool, [N, 6, 6, 6], explained as a dense output (region targets).\n"
        f'input = "input"\noutput = "{MAPS}"\nlabels = "labels.txt"\n'
        'default_method = "vanilla"\n' + PREPROCESSING
    )


def build_detector(shapes: Path, out: Path) -> None:
    model = onnx.load(shapes / "model.onnx")
    graph = model.graph
    cut = next(i for i, n in enumerate(graph.node) if MAPS in n.input)
    del graph.node[cut:]
    cells = 48 // CELL
    ys, xs = np.mgrid[:cells, :cells]
    boxes = np.stack(
        [
            (xs.reshape(-1) + 0.5) * CELL,
            (ys.reshape(-1) + 0.5) * CELL,
            np.full(cells * cells, BOX),
            np.full(cells * cells, BOX),
        ]
    ).astype(np.float32)[None]  # [1, 4, anchors]
    consts = {
        "det/boxes": boxes,
        "det/flat": np.array([0, 6, -1], np.int64),
        "det/batch_axis": np.array([0], np.int64),
        "det/scale": np.array(0.1, np.float32),
        "det/shift": np.array(-1.0, np.float32),
        "det/box_rest": np.array([4, cells * cells], np.int64),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    nodes = [
        helper.make_node("Reshape", [MAPS, "det/flat"], ["det/maps"]),
        helper.make_node("Mul", ["det/maps", "det/scale"], ["det/scaled"]),
        helper.make_node("Add", ["det/scaled", "det/shift"], ["det/logits"]),
        helper.make_node("Sigmoid", ["det/logits"], ["det/scores"]),
        helper.make_node("Shape", ["input"], ["det/in_shape"]),
        helper.make_node("Gather", ["det/in_shape", "det/batch_axis"], ["det/batch"], axis=0),
        helper.make_node("Concat", ["det/batch", "det/box_rest"], ["det/box_shape"], axis=0),
        helper.make_node("Expand", ["det/boxes", "det/box_shape"], ["det/batch_boxes"]),
        helper.make_node("Concat", ["det/batch_boxes", "det/scores"], ["head"], axis=1),
    ]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("head", TensorProto.FLOAT, ["batch", 10, cells * cells])
    )
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out / "model.onnx")
    shutil.copyfile(shapes / "labels.txt", out / "labels.txt")
    (out / "config.toml").write_text(
        "# Built by scripts/build_target_demos.py: the shapes demo's class maps as a\n"
        "# YOLOv8-layout head [N, 4+6, 36], fixed 16x16 boxes (detection targets).\n"
        'input = "input"\noutput = "head"\nlabels = "labels.txt"\ndefault_method = "vanilla"\n'
        + PREPROCESSING
        + '\n[detection]\nlayout = "yolov8"\nmin_score = 0.5\n'
    )


def draw_figure(models: Path, path: Path) -> None:
    from onnxplain.render import HeatmapOptions, Panel, figure, figure_png, to_2d
    from onnxplain.server import Explainer, Repository, SessionFactory
    from onnxplain.server.core.detection import DetectionTarget
    from onnxplain.server.core.explainer import ExplainCall
    from onnxplain.server.core.region_targets import Box, RegionTarget
    from PIL import Image

    core = Explainer(Repository.load(models, SessionFactory("cpu", threads=1)))
    labels = (models / "shapes" / "labels.txt").read_text().split()
    options = HeatmapOptions(sign="absolute", percentile=99.0)
    rows = []
    for name in ("star", "ring"):
        file = models / "shapes" / "samples" / f"{name}.png"
        data, image = file.read_bytes(), Image.open(file).convert("RGB")
        c = labels.index(name)
        row = [Panel(f"{name}.png", image=image)]
        for title, box in (("top half", Box(0, 0, 48, 24)), ("bottom half", Box(0, 24, 48, 48))):
            target = RegionTarget(box=box, classes=[c])
            got = core.explain(ExplainCall("shapes_maps", data, "guided", target=target))
            row.append(Panel(f"region: {name}, {title}", to_2d(got.saliency[0], "NCHW"), image))
        # The detector's best prediction: its box, asked for back as the target.
        head = core.explain(ExplainCall("shapes_detector", data, "vanilla", top_k=1)).scores[0]
        best = int(head[4:].max(axis=0).argmax())
        cx, cy, w, h = (float(v) for v in head[:4, best])
        target = DetectionTarget(Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        got = core.explain(ExplainCall("shapes_detector", data, "guided", target=target))
        d = got.detections[0]
        title = f"detection {d.index}: {labels[d.class_index]} {d.score:.2f}"
        row.append(Panel(title, to_2d(got.saliency[0], "NCHW"), image))
        rows.append(row)
    path.write_bytes(figure_png(figure(rows, options, "guided backprop of targets beyond a class")))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--figure", type=Path, default=None, help="also draw this PNG")
    args = parser.parse_args()
    shapes = args.models / "shapes"
    build_maps(shapes, args.models / "shapes_maps")
    build_detector(shapes, args.models / "shapes_detector")
    print(f"wrote {args.models / 'shapes_maps'} and {args.models / 'shapes_detector'}")
    if args.figure is not None:
        draw_figure(args.models, args.figure)


if __name__ == "__main__":
    main()
