"""Issue 17's table: what onnxplain makes of modern image models, one row per export.

For each (model, exporter, variant): the `onnxplain check` verdict over every method, the
convert result of vanilla, guided and gradcam, vanilla's error against float64 torch
autograd on the original module next to the float32 torch control's error, guided's error
against Captum's GuidedBackprop (float64) next to Captum in float32, OpenVINO against
onnxruntime on the vanilla explain model, and the explain/forward latency ratio.

Errors are relative L2 distances, ||ours - oracle|| / ||oracle||. The control is what the
same computation in float32 torch scores against float64, so it says how far float32 alone
goes on this model: an error near the control is rounding, one far above it is a wrong map
(or a variant that changes the model, fp16 and int8 do). Ratios are medians of paired,
interleaved runs (timing.py) on onnxruntime CPU: on a loaded machine they are noisy.

Weights are timm's random initialisation under a fixed seed (no downloads); torchvision,
which timm imports for a few transforms only, is a stub. A failure anywhere fills its
cells with the error's first line and the table goes on. Rows print as they finish.

    python bench/model_coverage.py --models resnet50,efficientnet_b0 --markdown
"""

from __future__ import annotations

import argparse
import sys
import time

MODELS: dict[str, bool] = {
    # name: whether the input size is the architecture's own (True) or --size may change it
    "resnet50": False,
    "efficientnet_b0": False,
    "mobilenetv3_large_100": False,
    "convnext_tiny": False,
    "poolformer_s12": False,
    "cspdarknet53": False,
    "inception_v3": False,
    "vit_small_patch16_224": False,  # built with img_size=--size (a multiple of 16)
    "swin_tiny_patch4_window7_224": True,  # its windows tile 224's patch grid only
    "maxvit_tiny_tf_224": True,
}
EXPORTERS = ("torchscript", "dynamo")
VARIANTS = ("fp32", "fp16", "int8", "onnxsim")
CONVERTED = ("vanilla", "guided", "gradcam")  # coverage_rows.CONVERTED, kept light here
COLUMNS = (
    "model",
    "exporter",
    "variant",
    "check",
    *CONVERTED,
    "vanilla err (ctl)",
    "guided err (ctl)",
    "ov-ort",
    "explain/forward",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated timm names")
    parser.add_argument("--exporters", default=",".join(EXPORTERS), help="torchscript,dynamo")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="fp32,fp16,int8,onnxsim")
    parser.add_argument(
        "--size", type=int, default=128, help="input side where the model allows it (224 else)"
    )
    parser.add_argument("--threads", type=int, default=2, help="runtime threads")
    parser.add_argument("--pairs", type=int, default=10, help="most timed pairs per row")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    for option, known in (("models", MODELS), ("exporters", EXPORTERS), ("variants", VARIANTS)):
        names = [n for n in getattr(args, option).split(",") if n]
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"--{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        setattr(args, option, names)
    return args


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(exc).__name__}: {line}"[:120].replace("|", "/")


class Table:
    """Prints the header once and each row as soon as it is complete."""

    def __init__(self, markdown: bool) -> None:
        self.markdown = markdown
        if markdown:
            print("| " + " | ".join(COLUMNS) + " |")
            print("|" + "---|" * len(COLUMNS))
        else:
            print("\t".join(COLUMNS))
        sys.stdout.flush()

    def row(self, cells: dict[str, str]) -> None:
        values = [cells.get(c, "-") for c in COLUMNS]
        print(("| " + " | ".join(values) + " |") if self.markdown else "\t".join(values))
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Heavy imports after argparse: `--help` needs none of them.
    import gc

    import coverage_rows

    table = Table(args.markdown)
    for name in args.models:
        size = 224 if MODELS[name] else args.size
        try:
            subject = coverage_rows.Subject.create(name, size)
        except Exception as exc:
            for exporter in args.exporters:
                table.row({"model": name, "exporter": exporter, "check": first_line(exc)})
            continue
        for exporter in args.exporters:
            started = time.perf_counter()
            try:
                exported = subject.export(exporter)
            except Exception as exc:
                table.row({"model": name, "exporter": exporter, "check": first_line(exc)})
                continue
            export_s = time.perf_counter() - started
            for variant in args.variants:
                cells = {"model": f"{name} ({size})", "exporter": exporter, "variant": variant}
                cells |= coverage_rows.measure(subject, exported, variant, args, first_line)
                print(f"# {name} {exporter} {variant}: export {export_s:.0f} s", file=sys.stderr)
                table.row(cells)
                gc.collect()
            del exported
        del subject
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
