"""`onnxplain sanity MODEL`: the model parameter randomisation test from the command line.

MODEL is a model folder as the server reads it (model.onnx, config.toml, samples/) or an
.onnx file. Inputs are .npy tensors (preprocessed, batch dimension included) or PNG/JPEG
images, which need a folder whose config.toml has [preprocessing]; by default, the
folder's samples/. Exit 0 when every method passes, 1 when one fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnxplain.graph_rewrite import ALL_METHODS, METHODS, Method, RewriteError

# scipy and scikit-image (the [sanity] extra): missing, `onnxplain sanity` says what to install.
from .cascade import reinit_draw
from .check import run_sanity
from .report import METRICS, SCORES, table

if TYPE_CHECKING:
    from onnxplain.server.store.config import ModelConfig

_MODEL_FILE = "model.onnx"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class UsageError(Exception):
    """Something the user can fix: printed as one line, exit status 2."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sanity",
        help="does each method's map change when the weights are randomised? (Adebayo et al.)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="a model folder (model.onnx, config.toml) or .onnx")
    p.add_argument(
        "--method",
        action="append",
        choices=ALL_METHODS,
        help=f"repeatable (default: {', '.join(METHODS)})",
    )
    p.add_argument(
        "--input",
        action="append",
        type=Path,
        help=".npy, .png or .jpg; repeatable (default: samples/)",
    )
    p.add_argument("--target", type=int, action="append", help="class per input (default: top)")
    p.add_argument("--metric", choices=METRICS, default="spearman_abs", help="for the verdict")
    p.add_argument(
        "--max-similarity",
        type=float,
        default=0.5,
        help="a method fails when its maps stay more similar than this to the original's "
        "(its --score of --metric; default 0.5)",
    )
    p.add_argument(
        "--score",
        choices=SCORES,
        default="mean",
        help="mean: each measure averaged over the cascade's steps (Quantus's average "
        "correlation); last: on the fully randomised model (default mean)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--plot", type=Path, help="write the figure here (PNG or SVG)")
    p.add_argument(
        "--write",
        action="store_true",
        help="store sanity.json and sanity.png in the model folder, where the server reads it",
    )
    p.set_defaults(func=run_sanity_command)


def run_sanity_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as exc:
        print(f"onnxplain sanity: {exc}", file=sys.stderr)
        return 2
    except RewriteError as exc:
        print(f"onnxplain sanity: cannot explain the model: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    folder, model_path = _locate(args.model)
    if args.write and folder is None:
        raise UsageError("--write needs a model folder, not a bare .onnx file")
    config = _config(folder)
    x = _inputs(args.input, folder, config)
    methods: list[Method] = args.method or list(METHODS)
    maps: dict[str, list[np.ndarray]] = {m: [] for m in methods}

    def keep_first(method: str, depth: int, saliency: np.ndarray) -> None:
        maps[method].append(saliency[0])

    try:
        report = run_sanity(
            onnx.load(str(model_path)),
            x,
            methods,
            targets=args.target,
            draw=reinit_draw(args.seed),
            metric=args.metric,
            max_similarity=args.max_similarity,
            score=args.score,
            name=folder.name if folder else model_path.stem,
            input_name=config.input if config else None,
            output_name=config.output if config else None,
            on_maps=keep_first,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(table(report))
    plots = [args.plot] if args.plot else []
    if args.write and folder is not None:
        print(f"wrote {report.write(folder)}")
        plots.append(folder / "sanity.png")
    if plots:
        from .plot import plot_report

        layout = config.preprocessing.layout if config and config.preprocessing else "NCHW"
        for path in plots:
            plot_report(report, path, maps, layout)
            print(f"wrote {path}")
    return 0 if report.passed else 1


def _locate(given: Path) -> tuple[Path | None, Path]:
    if given.is_dir():
        if not (given / _MODEL_FILE).exists():
            raise UsageError(f"{given} has no {_MODEL_FILE}")
        return given, given / _MODEL_FILE
    if given.is_file():
        return None, given
    raise UsageError(f"{given}: no such file or folder")


def _config(folder: Path | None) -> ModelConfig | None:
    if folder is None:
        return None
    from onnxplain.server.core.errors import ConfigError
    from onnxplain.server.store.config import load_config

    try:
        return load_config(folder)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _inputs(
    given: list[Path] | None, folder: Path | None, config: ModelConfig | None
) -> np.ndarray:
    paths = given or _default_inputs(folder)
    if not paths:
        raise UsageError("no inputs: give --input (the model folder has no samples/)")
    arrays = []
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        if path.suffix.lower() == ".npy":
            arrays.append(np.load(path).astype(np.float32))
        elif path.suffix.lower() in _IMAGE_SUFFIXES:
            arrays.append(_image(path, config))
        else:
            raise UsageError(f"{path}: give .npy, .png or .jpg")
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise UsageError(f"the inputs have different shapes: {sorted(shapes)}")
    return np.concatenate(arrays)


def _default_inputs(folder: Path | None) -> list[Path]:
    if folder is None or not (folder / "samples").is_dir():
        return []
    files = sorted((folder / "samples").iterdir())
    images = [f for f in files if f.suffix.lower() in _IMAGE_SUFFIXES]
    return images or [f for f in files if f.suffix == ".npy"]


def _image(path: Path, config: ModelConfig | None) -> np.ndarray:
    pre = config.preprocessing if config is not None else None
    if pre is None:
        raise UsageError(f"{path} is an image, but the model has no [preprocessing] config")
    from onnxplain.server.core.errors import InvalidInput
    from onnxplain.server.core.imaging import preprocess

    try:
        return preprocess(path.read_bytes(), pre)
    except InvalidInput as exc:
        raise UsageError(f"{path}: {exc}") from None
