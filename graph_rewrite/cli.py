"""`onnxplain convert` and `onnxplain check`: the rewrite pass from the shell."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import onnx

from .backward import GRAD_INPUT, SALIENCY_OUTPUT
from .errors import RewriteError
from .methods import ALL_METHODS, RECTIFIER_CHOICES, REGISTRY, Tensor
from .recipe import (
    SEED_CHOICES,
    RecipeOptions,
    SeedFrom,
    candidate_layers,
    check_each,
    default_layer,
    explain_recipe,
)
from .rules.rectifiers import DEFAULT_RECTIFIERS, other_rectifiers
from .seeding import TARGETS_INPUT, TARGETS_OUTPUT
from .shapes import parse_input_shape
from .targets import TARGETS


def add_commands(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert",
        help="write the explain model (prediction + saliency) of an ONNX model",
        description="Append the backward pass of the chosen saliency method to MODEL as "
        "standard ONNX ops. The result has every input and output of MODEL, plus the input "
        f"{GRAD_INPUT!r} (the seed, shaped like the explained output) and the output "
        f"{SALIENCY_OUTPUT!r} (shaped like the explained input).",
    )
    convert.add_argument("model", type=Path, help="the exported ONNX model")
    convert.add_argument("-o", "--output-file", type=Path, required=True, help="where to write")
    convert.add_argument("--method", choices=ALL_METHODS, default="guided")
    convert.add_argument(
        "--seed-from",
        choices=SEED_CHOICES,
        default="output_grad",
        help=f"output_grad (default): the caller feeds the upstream gradient; targets: the "
        f"model takes int64 {TARGETS_INPUT!r} (one class per sample, -1 for its top class), "
        f"seeds itself in one run and outputs {TARGETS_OUTPUT!r}",
    )
    _add_build_args(convert)
    convert.set_defaults(func=run_convert)

    chk = sub.add_parser(
        "check",
        help="say whether convert will succeed, without writing anything",
        description="Run every step of convert but writing the result, for the given method "
        "(default: every method, each on its own; the layer methods only where a layer is "
        "given or found), and say which methods convert will build and why the others "
        "fail. Prints Grad-CAM's layer. Exit 0 when the method asked for will build (with "
        "no --method: when any method will); 1 with convert's error (e.g. every op without "
        "a rule: op type, node name, opset) when it will not.",
    )
    chk.add_argument("model", type=Path)
    chk.add_argument("--method", choices=(*ALL_METHODS, "all"), default="all")
    _add_build_args(chk)
    chk.set_defaults(func=run_check)


def _add_build_args(parser: argparse.ArgumentParser) -> None:
    """The options that change what convert builds, shared by check."""
    parser.add_argument(
        "--input", dest="input_name", help="tensor to explain (default: the first float input)"
    )
    parser.add_argument(
        "--output",
        dest="output_name",
        help="tensor whose gradient is seeded (default: the first output, or the logits "
        "when it is their Softmax)",
    )
    parser.add_argument(
        "--input-shape",
        dest="input_shapes",
        action="append",
        default=[],
        metavar="NAME:D1,D2,...",
        help="fix an input's shape before anything else, e.g. x:1,3,640,640 (repeatable)",
    )
    parser.add_argument(
        "--rectifiers",
        choices=RECTIFIER_CHOICES,
        default=DEFAULT_RECTIFIERS,
        help="which activations get deconvnet's or guided backprop's rule: only Relu, as "
        "Captum and pytorch-grad-cam (default), or also ReLU6-style Clip, LeakyRelu, PRelu "
        "and HardSwish",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="portable",
        help="portable (default): the same saliency on every conforming ONNX runtime; "
        "onnxruntime: faster formulations that only onnxruntime is checked to run right",
    )
    parser.add_argument("--grad-name", default=GRAD_INPUT, help="name of the added input")
    parser.add_argument("--saliency-name", default=SALIENCY_OUTPUT, help="name of the added output")
    _add_method_params(parser)


def _add_method_params(parser: argparse.ArgumentParser) -> None:
    """One flag per method parameter in the registry (--layer, --cam-style, ...), so that a
    new method's parameters reach the shell without touching this file."""
    seen: dict[str, list[str]] = {}
    first: dict[str, tuple[type, str, tuple[object, ...] | None]] = {}
    for spec in REGISTRY.values():
        for param in spec.params:
            if param.type is Tensor:  # fed to the model when it runs, not a flag's text
                continue
            seen.setdefault(param.name, []).append(spec.name)
            first.setdefault(param.name, (param.type, param.description, param.choices))
    for name, users in seen.items():
        kind, description, choices = first[name]
        flag = "--" + name.replace("_", "-")
        help_text = f"{description} ({', '.join(users)})"
        if kind is bool:
            parser.add_argument(
                flag, dest=f"param_{name}", action="store_true", default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag, dest=f"param_{name}", type=kind, choices=choices, help=help_text
            )


def _method_params(args: argparse.Namespace, method: str) -> dict[str, object]:
    """The parameters given on the command line that `method` takes."""
    given = {}
    for param in REGISTRY[method].params:
        value = getattr(args, f"param_{param.name}", None)
        if value is not None:
            given[param.name] = value
    return given


def _options(
    args: argparse.Namespace, shapes: dict[str, list[int]], seed_from: SeedFrom = "output_grad"
) -> RecipeOptions:
    return RecipeOptions(
        input_name=args.input_name,
        output_name=args.output_name,
        rectifiers=args.rectifiers,
        grad_name=args.grad_name,
        saliency_name=args.saliency_name,
        target=args.target,
        input_shapes=shapes,
        seed_from=seed_from,
    )


def _input_shapes(texts: list[str]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for text in texts:
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise RewriteError(f"--input-shape: {name!r} is given twice")
        shapes[name] = dims
    return shapes


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise RewriteError(f"no such file: {path}") from None
    except Exception as exc:
        raise RewriteError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None


def run_convert(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        model = _load(args.model)
        options = _options(args, _input_shapes(args.input_shapes), args.seed_from)
        explain = explain_recipe(model, args.method, _method_params(args, args.method), options)
        _save(explain, args.output_file)
    except RewriteError as exc:
        print(f"onnxplain convert: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(f"wrote {args.output_file} ({args.method}, {args.target}) in {seconds:.2f} s")
    note = _rectifier_note(model, args)
    if note:
        print(note)
    return 0


# The methods, and the gradients a batch method averages, that rectifiers change.
_RECTIFYING = ("deconvnet", "guided", "guided_gradcam")


def _rectifier_note(model: onnx.ModelProto, args: argparse.Namespace) -> str | None:
    """Says which activations kept their true gradient under --rectifiers relu (the
    default), where the method rectifies and the model has any."""
    rectifying = args.method in _RECTIFYING or getattr(args, "param_gradient", None) in _RECTIFYING
    if args.rectifiers != "relu" or not rectifying:
        return None
    others = other_rectifiers(model)
    if not others:
        return None
    listed = ", ".join(f"{count} {op}" for op, count in sorted(others.items()))
    return (
        f"note: only Relu gets {args.method}'s rule (--rectifiers relu, as Captum and "
        f"pytorch-grad-cam); {listed} keep their true gradient: --rectifiers all gives "
        "them the rule too"
    )


def _save(model: onnx.ModelProto, path: Path) -> None:
    # Models over protobuf's 2 GiB limit keep their weights in a file beside the model.
    large = model.ByteSize() > 1_800_000_000
    try:
        onnx.save(model, str(path), save_as_external_data=large, location=path.name + ".data")
    except OSError as exc:
        raise RewriteError(f"cannot write {path}: {exc.strerror}") from None


def _print_candidates(model: onnx.ModelProto, options: RecipeOptions) -> None:
    """The model's stage outputs, one per line, for a --layer to choose from."""
    try:
        found = candidate_layers(model, options)
    except RewriteError:  # the verdicts above already said what fails
        return
    if found:
        print("candidate layers (each stage's last feature map, input side first):")
        for name, shape in found.items():
            print(f"  {name}  {shape}")


def run_check(args: argparse.Namespace) -> int:
    """Every method asked for (all by default) checked on its own: a verdict each. Exit 1
    when a method named with --method fails, or, with none named, when no method builds."""
    try:
        model = _load(args.model)
        options = _options(args, _input_shapes(args.input_shapes))
        layer = args.param_layer or default_layer(model, options)
        asked = args.method != "all"
        if asked:
            methods: tuple[str, ...] = (args.method,)
        else:
            # Without a layer the layer methods cannot build; say so instead of failing.
            takes_layer = {
                name for name, spec in REGISTRY.items() for p in spec.params if p.name == "layer"
            }
            methods = tuple(m for m in ALL_METHODS if layer is not None or m not in takes_layer)
        params = {m: _method_params(args, m) for m in methods}
        ends, verdicts = check_each(model, methods, params, options)
    except RewriteError as exc:
        print(f"onnxplain check: {exc}", file=sys.stderr)
        return 1
    built = [m for m, error in verdicts.items() if error is None]
    failed = {m: error for m, error in verdicts.items() if error is not None}
    if not built:
        # One message when every method fails alike (an op without a rule, typically).
        for message in dict.fromkeys(str(e) for e in failed.values()):
            print(f"onnxplain check: {message}", file=sys.stderr)
        return 1
    print(
        f"ok: convert will build the explain model from {ends.input!r} to {ends.output!r} "
        f"({', '.join(built)}, {args.target})"
    )
    for method, error in failed.items():
        print(f"{method}: convert will fail: {error}")
    if layer:
        print(f"Grad-CAM layer: {layer!r}")
    else:
        none = "none (nothing pools or flattens a spatial tensor: give --layer)"
        print(f"Grad-CAM default layer: {none}")
        _print_candidates(model, options)
    return 1 if asked and failed else 0
