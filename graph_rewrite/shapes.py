"""Input shapes: the ones a user fixes (`--input-shape NAME:1,3,640,640`), and the many ways
exporters write "unknown" (-1, 0, "?", unset), read as one: a dimension left unset.

Both run on the model before anything else (opset conversion, shape inference), so that
every later step sees one encoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from .errors import RewriteError

InputShapes = Mapping[str, Sequence[int]]

# dim_params that exporters write to mean "unknown", not a named size: Paddle writes "?" for
# every free axis, and two axes sharing one name would read as "equal".
_UNKNOWN_PARAMS = frozenset({"?", "-1"})


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """`NAME:1,3,640,640` → ("NAME", [1, 3, 640, 640]); the name may itself hold colons."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise RewriteError(
            f"--input-shape {text!r}: expected NAME:D1,D2,... e.g. image:1,3,224,224"
        )
    try:
        values = [int(d) for d in dims.split(",")]
    except ValueError:
        raise RewriteError(
            f"--input-shape {text!r}: dimensions must be positive integers separated by commas"
        ) from None
    if any(v <= 0 for v in values):
        raise RewriteError(f"--input-shape {text!r}: dimensions must be positive integers")
    return name, values


def free_unknown_dims(graph: onnx.GraphProto) -> None:
    """Every -1, 0 or "?" dimension of the graph's inputs, outputs and value_info left unset."""
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for dim in vi.type.tensor_type.shape.dim:
            value_unknown = dim.HasField("dim_value") and dim.dim_value <= 0
            if value_unknown or dim.dim_param.strip() in _UNKNOWN_PARAMS:
                dim.Clear()


def fix_input_shapes(graph: onnx.GraphProto, shapes: InputShapes) -> None:
    """Sets the given graph inputs' shapes; inferred shapes are dropped, to be inferred anew."""
    if not shapes:
        return
    initializers = {t.name for t in graph.initializer}
    inputs = {vi.name: vi for vi in graph.input if vi.name not in initializers}
    for name, dims in shapes.items():
        vi = inputs.get(name)
        if vi is None:
            known = ", ".join(repr(n) for n in inputs) or "none"
            raise RewriteError(f"--input-shape: the model has no input {name!r} (inputs: {known})")
        dims = list(dims)
        if any(int(d) <= 0 for d in dims):
            raise RewriteError(f"--input-shape {name!r}: dimensions must be positive, not {dims}")
        tensor = vi.type.tensor_type
        if tensor.HasField("shape") and len(tensor.shape.dim) != len(dims):
            raise RewriteError(
                f"--input-shape {name!r}: the input has rank {len(tensor.shape.dim)}, "
                f"{len(dims)} dimensions given"
            )
        del tensor.shape.dim[:]
        for d in dims:
            tensor.shape.dim.add().dim_value = int(d)
    # Shapes the exporter stored for the old input sizes would clash with the new ones.
    del graph.value_info[:]
    for vi in graph.output:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for dim in vi.type.tensor_type.shape.dim:
                dim.Clear()
