"""`onnxplain explain` and `onnxplain models`: the client side of the service."""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np
from onnxplain.render import (
    SIGNS,
    HeatmapOptions,
    as_image,
    guess_layout,
    png_bytes,
    render_heatmap,
    row_paths,
    tensor_image,
    to_2d,
)
from PIL import Image

from .client import Client, Explanation, ModelSummary, Retry, ServerUnreachable, ServiceError
from .method_options import (
    add_method_options,
    method_help,
    method_options,
    method_report,
    methods_lines,
    parse_params,
)
from .targets import Target, parse_target

# $ONNXPLAIN_SERVER, when set, spares every command its --server.
DEFAULT_SERVER = os.environ.get("ONNXPLAIN_SERVER") or "127.0.0.1:50051"
# A plain heatmap (--no-colorbar) of a small image is enlarged to at least this many pixels
# on its longer side, by a whole factor: an 8x8 map is otherwise a dot on screen.
MIN_SIDE = 256


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="ask a server for a saliency map")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"HOST:PORT (default {DEFAULT_SERVER})")
    p.add_argument("--model", required=True, help="model name (see `onnxplain models`)")
    p.add_argument("--method", default=None, help=method_help())
    add_method_options(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--target",
        type=parse_targets,
        default=None,
        help="classes to explain: one per sample or one for all, as indices (3,7) or as "
        "labels (cat,dog); default: each sample's top class",
    )
    which.add_argument(
        "--top-k", type=int, default=None, metavar="K", help="explain each sample's K best classes"
    )
    which.add_argument(
        "--explain",
        type=_target_arg,
        default=None,
        metavar="TARGET",
        help="beyond a class: region:box:X0,Y0,X1,Y1[:CLASSES], region:mask:FILE[:CLASSES] "
        "(a PNG or .npy mask), position:T[:CLASS], detection:X0,Y0,X1,Y1[:CLASS][:box] "
        "(boxes in input pixels; CLASSES 1,2 or none for all)",
    )
    which.add_argument(
        "--output-grad",
        type=Path,
        default=None,
        metavar="FILE",
        help="a .npy seed shaped like the explained output (batch included)",
    )
    p.add_argument("input", type=Path, help="a PNG/JPEG image or a preprocessed .npy tensor")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help=".npy saliency (all rows) or .png heatmaps (one file per row when there are "
        "several: OUT_<sample>_class<k>.png)",
    )
    look = p.add_argument_group("heatmap (.png output)")
    look.add_argument("--sign", choices=SIGNS, default="all", help="which part of the map to draw")
    look.add_argument("--opacity", type=float, default=0.5, help="map over image, 0-1 (0.5)")
    look.add_argument("--colormap", default=None, help="a matplotlib colormap (default per sign)")
    look.add_argument(
        "--percentile", type=float, default=None, help="saturate beyond this percentile of |map|"
    )
    look.add_argument("--no-overlay", action="store_true", help="the map alone, not over the image")
    look.add_argument(
        "--no-colorbar", action="store_true", help="the overlay alone, without the figure frame"
    )
    _add_connection_args(p)
    p.set_defaults(func=run_explain)

    p = sub.add_parser("models", help="list the models a server offers")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"HOST:PORT (default {DEFAULT_SERVER})")
    _add_connection_args(p)
    p.set_defaults(func=run_models)


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (default: plaintext, no token)")
    g.add_argument("--tls", action="store_true", help="speak TLS, trusting the system's CAs")
    g.add_argument("--tls-ca", type=Path, help="PEM CA of the server's certificate (implies TLS)")
    g.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mutual TLS")
    g.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    g.add_argument("--token-file", type=Path, help="file whose first line is the bearer token")
    g.add_argument(
        "--retry-for",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"keep retrying while the server is unavailable (default: {Retry.first_contact_s:g} "
        f"until a server has answered, {Retry.total_s:g} after)",
    )


def _connect(args: argparse.Namespace) -> Client:
    """The client the connection flags describe; OSError or ValueError on a bad file."""
    token = None
    if args.token_file is not None:
        lines = args.token_file.read_text().split()
        if not lines:
            raise ValueError(f"--token-file {args.token_file} is empty")
        token = lines[0]
    return Client(
        args.server,
        tls=args.tls,
        root_ca=args.tls_ca,
        client_cert=args.tls_cert,
        client_key=args.tls_key,
        token=token,
        retry=_retry(args.retry_for),
    )


def _retry(seconds: float | None) -> Retry:
    """The default, or `--retry-for` for every wait: a server asked for by the caller
    (a script that starts one, then asks it) may take that long to come up."""
    if seconds is None:
        return Retry()
    seconds = max(0.0, seconds)
    return Retry(total_s=seconds, first_contact_s=seconds)


def failure(command: str, exc: Exception) -> str:
    """What `onnxplain COMMAND` prints when a call fails: the reason, and for a server that
    never answered, how to start one or point at one."""
    if isinstance(exc, ServerUnreachable):
        return (
            f"onnxplain {command}: {exc}.\n"
            "Start one with `bash scripts/serve` (the demo models) or "
            "`onnxplain serve --models DIR`, or point --server (or $ONNXPLAIN_SERVER) at a "
            "running one."
        )
    return f"onnxplain {command}: {exc}"


def _target_arg(text: str) -> Target:
    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_targets(text: str) -> list[int] | list[str]:
    """`3,7` as class indices; anything else (`cat,dog`) as class names."""
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"empty class in {text!r}")
    try:
        return [int(p) for p in parts]
    except ValueError:
        return parts


def run_explain(args: argparse.Namespace) -> int:
    as_png = args.output.suffix.lower() == ".png"
    if not as_png and args.output.suffix.lower() != ".npy":
        print("onnxplain explain: -o must end in .npy or .png", file=sys.stderr)
        return 2
    try:
        options = HeatmapOptions(
            args.sign, args.opacity, args.colormap, args.percentile, not args.no_overlay
        )
        with _connect(args) as client:
            # The server says which parameters the method takes, and their types.
            summary = client.model(args.model) if as_png or args.param else None
            params = parse_params(args.param, summary, args.method) if summary else {}
            result = client.explain(
                args.model,
                args.input,
                args.method,
                targets=args.target,
                top_k=args.top_k,
                params=params,
                target=args.explain,
                output_grad=np.load(args.output_grad) if args.output_grad else None,
                **method_options(args),
            )
        paths = row_paths(args.output, result.samples.tolist(), result.targets.tolist())
        if as_png:
            assert summary is not None
            for row, path in enumerate(paths):
                path.write_bytes(draw_row(result, row, options, summary, args.no_colorbar))
        else:
            np.save(args.output, result.saliency)
    except (ServiceError, OSError, ValueError) as exc:
        print(failure("explain", exc), file=sys.stderr)
        return 1
    print(f"{result.method} saliency, {len(result.targets)} explained:")
    for row in range(len(result.targets)):
        written = f"  -> {paths[row]}" if as_png else ""
        print(f"  {result.describe(row)}{written}")
    if not as_png:
        print(f"saliency {list(result.saliency.shape)} written to {args.output}")
    for line in method_report(result):
        print(line)
    return 0


def draw_row(
    result: Explanation,
    row: int,
    options: HeatmapOptions,
    model: ModelSummary,
    plain: bool,
) -> bytes:
    """One row's heatmap as PNG bytes: over the image sent (at its own size) or over the
    tensor sent, de-normalised; in a figure with a colour bar unless `plain`."""
    image = None
    if result.image is not None:
        image = as_image(Image.open(io.BytesIO(result.image)))
    elif model.takes_images and result.tensor is not None:
        sample = result.tensor[int(result.samples[row])]
        image = tensor_image(sample, model.mean, model.std, model.layout)
    layout = model.layout if model.takes_images else guess_layout(result.saliency.shape)
    map2d = to_2d(result.saliency[row], layout)
    if plain:
        return png_bytes(render_heatmap(map2d, options, image, min_side=MIN_SIDE))
    from onnxplain.render import Panel, figure, figure_png  # matplotlib's axes: only here

    # "sample 0  class 3 (star)  score 8.87  p 1.000" as two lines that fit one panel.
    what, _, numbers = result.describe(row).partition("  score ")
    title = f"{result.method}: {what.split('  ', 1)[1]}" + (f"\nscore {numbers}" if numbers else "")
    return figure_png(figure([[Panel(title, map2d, image)]], options))


def run_models(args: argparse.Namespace) -> int:
    try:
        with _connect(args) as client:
            models = client.models()
    except (ServiceError, OSError, ValueError) as exc:
        print(failure("models", exc), file=sys.stderr)
        return 1
    if not models:
        # An empty list is no answer an operator can use: the server found no model.
        print(
            f"onnxplain models: the server at {args.server} serves no models: its model "
            "folder holds no <name>/model.onnx (its log names the folder it read). Add a "
            "model there; the server loads it on its next reload (SIGHUP, --poll or the "
            "admin RPC) or restart.",
            file=sys.stderr,
        )
        return 1
    for m in models:
        if not m.available:
            print(f"{m.name}\tunavailable: {m.error}")
            continue
        kind = "image or tensor" if m.takes_images else "tensor"
        print(
            f"{m.name}\tinput {list(m.input_shape)} ({kind})\toutput {list(m.output_shape)}"
            f"\t{len(m.labels)} labels\tdefault {m.default_method}"
            + _sanity_column(m.sanity)
            + (f"\tnewer files failed to load: {m.reload_error}" if m.reload_error else "")
        )
        for line in methods_lines(m.methods, m.default_layer):
            print(line)
    return 0


def _sanity_column(results: tuple[tuple[str, bool], ...]) -> str:
    # An operator reads which methods failed the model's sanity check before trusting them.
    if not results:
        return ""
    return "\tsanity: " + ", ".join(f"{m} {'pass' if ok else 'FAIL'}" for m, ok in results)
