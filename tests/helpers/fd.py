"""Finite-difference oracle for backward rules and whole models.

A vector-Jacobian product is checked through its defining identity
    <u, J v>  ==  <J^T u, v>
for random seeds u and directions v, with J v from central differences of the forward
model on onnxruntime, in float64 wherever onnxruntime has a float64 kernel for the op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxplain.graph_rewrite import build_explain_model, default_input

from helpers.model_files import loadable


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with loadable(model) as source:  # a large model from a file: fewer copies of its weights
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def single_op_model(
    op_type: str,
    inputs: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    constants: Mapping[str, np.ndarray] | None = None,
    input_order: Sequence[str] | None = None,
    n_outputs: int = 1,
    opset: int = 17,
) -> onnx.ModelProto:
    """One node over graph inputs (`inputs`) and initializers (`constants`)."""
    constants = dict(constants or {})
    order = list(input_order or [*inputs, *constants])
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, order, outputs, name=f"{op_type}_under_test", **(attrs or {}))
    graph = helper.make_graph(
        [node],
        f"{op_type}_test",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs.items()
        ],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
        [numpy_helper.from_array(v, n) for n, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    for output in model.graph.output:
        # onnx infers no type through some function ops (GroupNormalization): take the
        # first input's, which every such op here keeps.
        if output.type.tensor_type.elem_type == TensorProto.UNDEFINED:
            first = next(iter(inputs.values()))
            output.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(first.dtype)
    return model


def as_dtype(model: onnx.ModelProto, dtype: type) -> onnx.ModelProto:
    """The same model with every float32 tensor (inputs, outputs, weights, casts) in `dtype`."""
    target = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in [*m.graph.input, *m.graph.output, *m.graph.value_info]:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = target
    for i, init in enumerate(m.graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            m.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(dtype), init.name)
            )
    for node in m.graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = target
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(dtype))
                )
    return m


def vjp_error(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: str | None = None,
    output: str | None = None,
    method: str = "vanilla",
    directions: int = 3,
    seed: int = 0,
    eps: float | None = None,
    reference_forward: bool = False,
) -> tuple[float, type]:
    """Largest relative mismatch of <u, Jv> against <J^T u, v> over random u, v.

    Tries float64 first; falls back to float32 (with a larger step) where onnxruntime
    has no float64 kernel for some op. With `reference_forward`, the differences come
    from onnx's own reference evaluator in float64 instead: slower, but a float32 step
    large enough to beat rounding would cross ReLU kinks in a whole network.
    """
    wrt = wrt or default_input(model)
    if reference_forward:
        explain = build_explain_model(model, method, input_name=wrt, output_name=output)  # type: ignore[arg-type]
        return _against_reference(model, explain, feeds, wrt, output, directions, seed)
    for dtype, step in ((np.float64, 1e-5), (np.float32, 1e-2)):
        # Built from the model in `dtype`: some rules pick their ops by float type.
        typed = as_dtype(model, dtype)
        explain = build_explain_model(typed, method, input_name=wrt, output_name=output)  # type: ignore[arg-type]
        try:
            fwd = session(with_first_output(typed, output))
            exp = session(explain)
        except Exception:
            continue
        err = session_vjp_error(fwd, exp, feeds, wrt, dtype, eps or step, directions, seed)
        return err, dtype
    raise RuntimeError("onnxruntime could not run the model in float64 or float32")


# Tolerances: float64 differences are good to about 1e-8; float32 ones (onnxruntime has
# no float64 Conv, Erf, pooling...) to about 1e-4 of the terms' size.
TOLERANCE = {np.float64: 1e-6, np.float32: 1e-3}


def assert_vjp_matches(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: str | None = None,
    output: str | None = "y0",
    method: str = "vanilla",
    **kwargs: Any,
) -> None:
    """Asserts that the explain model's saliency is the model's vector-Jacobian product."""
    err, dtype = vjp_error(model, feeds, wrt, output, method, **kwargs)
    assert err < TOLERANCE[dtype], f"VJP mismatch {err:.3g} in {np.dtype(dtype).name}"


def with_first_output(model: onnx.ModelProto, output: str | None) -> onnx.ModelProto:
    """The model with `output` (a graph output or an intermediate) as its first output.

    An intermediate gets its type from value_info where known, else float32 (onnxruntime
    rejects untyped outputs); shape inference is not run, since it is slow on big weights.
    """
    if output is None or output == model.graph.output[0].name:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    kept = [o for o in m.graph.output if o.name != output]
    known = [*m.graph.output, *m.graph.value_info]
    first = next((vi for vi in known if vi.name == output), None)
    if first is None:
        first = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
    copies = [onnx.ValueInfoProto() for _ in range(len(kept) + 1)]
    for copy, vi in zip(copies, [first, *kept], strict=True):
        copy.CopyFrom(vi)
    del m.graph.output[:]
    m.graph.output.extend(copies)
    return m


def dynamic_batch(model: onnx.ModelProto, names: set[str] | None = None) -> onnx.ModelProto:
    """The model with a symbolic first dimension "N" on the graph inputs `names` (default all)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if names is None or vi.name in names:
            vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(m)


def dynamic_dims(
    model: onnx.ModelProto, axes: Sequence[int] = (2, 3, 4), names: set[str] | None = None
) -> onnx.ModelProto:
    """The model with symbolic dimensions on `axes` (default: the spatial ones) of the graph
    inputs `names` (default all), as detectors and OCR models come: H and W known at run time."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if names is None or vi.name in names:
            dims = vi.type.tensor_type.shape.dim
            for axis in axes:
                if axis < len(dims):
                    dims[axis].dim_param = f"{vi.name}_d{axis}"
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(m)


def assert_vjp_matches_at_sizes(
    model: onnx.ModelProto,
    feeds_per_size: Sequence[Mapping[str, np.ndarray]],
    wrt: str,
    output: str | None = "y0",
    method: str = "vanilla",
    directions: int = 2,
) -> onnx.ModelProto:
    """Builds the explain model ONCE and checks its saliency at each set of feeds (inputs of
    different sizes): a graph that read a size at convert time fails all but one of them.
    Returns the explain model (in the float type the check ran in)."""
    for dtype, step in ((np.float64, 1e-5), (np.float32, 1e-2)):
        typed = as_dtype(model, dtype)
        explain = build_explain_model(typed, method, input_name=wrt, output_name=output)  # type: ignore[arg-type]
        try:
            fwd = session(with_first_output(typed, output))
            exp = session(explain)
        except Exception:  # onnxruntime has no kernel for some op in this float type
            continue
        for feeds in feeds_per_size:
            err = session_vjp_error(fwd, exp, feeds, wrt, dtype, step, directions, seed=0)
            shape = feeds[wrt].shape
            assert err < TOLERANCE[dtype], f"VJP mismatch {err:.3g} at {shape} in {dtype}"
        return explain
    raise RuntimeError("onnxruntime could not run the model in float64 or float32")


def _central(
    fwd: ort.InferenceSession,
    out_name: str,
    feeds: Mapping[str, np.ndarray],
    wrt: str,
    u: np.ndarray,
    v: np.ndarray,
    h: float,
) -> float:
    x = feeds[wrt]
    # np.asarray: a 0-d input must stay an array, which onnxruntime wants, not a numpy scalar.
    plus = fwd.run([out_name], {**feeds, wrt: np.asarray(x + h * v, dtype=x.dtype)})[0]
    minus = fwd.run([out_name], {**feeds, wrt: np.asarray(x - h * v, dtype=x.dtype)})[0]
    diff = plus.astype(np.float64) - minus.astype(np.float64)
    return float(np.sum(u.astype(np.float64) * diff) / (2 * h))


def _richardson(central: Any, h: float) -> float:
    # Central differences err by O(h^2); combining steps h and h/2 cancels that term,
    # which lets float32 use a step large enough to keep rounding error small.
    return (4 * central(h / 2) - central(h)) / 3


def _against_reference(
    model: onnx.ModelProto,
    explain: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: str,
    output: str | None,
    directions: int,
    seed: int,
) -> tuple[float, type]:
    from onnx.reference import ReferenceEvaluator

    forward = ReferenceEvaluator(as_dtype(with_first_output(model, output), np.float64))
    out_name = forward.output_names[0]
    for dtype in (np.float64, np.float32):
        try:
            exp = session(as_dtype(explain, dtype))
        except Exception:
            continue
        feeds64 = {
            k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in feeds.items()
        }
        y = forward.run([out_name], feeds64)[0]
        rng = np.random.default_rng(seed)
        worst = 0.0
        for _ in range(directions):
            u = np.asarray(rng.standard_normal(y.shape))
            v = np.asarray(rng.standard_normal(feeds64[wrt].shape))
            cast = {k: (a.astype(dtype) if a.dtype.kind == "f" else a) for k, a in feeds64.items()}
            saliency = exp.run(["saliency"], {**cast, "output_grad": u.astype(dtype)})[0]
            numeric = _central(forward, out_name, feeds64, wrt, u, v, 1e-6)  # type: ignore[arg-type]
            worst = max(worst, _relative_gap(numeric, saliency, v))
        return worst, dtype
    raise RuntimeError("onnxruntime could not run the explain model")


def _relative_gap(numeric: float, saliency: np.ndarray, v: np.ndarray) -> float:
    analytic = float(np.sum(saliency.astype(np.float64) * v))
    # Normalise by the size of the terms summed, so that cancellation in <u, Jv>
    # does not turn rounding noise into a large relative error.
    typical = float(np.linalg.norm(saliency) * np.linalg.norm(v)) / np.sqrt(v.size)
    scale = max(abs(numeric), abs(analytic), typical, 1e-6)
    return abs(numeric - analytic) / scale


def session_vjp_error(
    fwd: ort.InferenceSession,
    exp: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    wrt: str,
    dtype: type,
    eps: float,
    directions: int,
    seed: int,
) -> float:
    """vjp_error's comparison on sessions the caller built (whole-model tests build them once)."""
    rng = np.random.default_rng(seed)
    cast = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in feeds.items()}
    out_name = fwd.get_outputs()[0].name
    y = fwd.run([out_name], cast)[0]
    worst = 0.0
    for _ in range(directions):
        u = np.asarray(rng.standard_normal(y.shape), dtype=dtype)
        v = np.asarray(rng.standard_normal(cast[wrt].shape), dtype=dtype)
        saliency = exp.run(["saliency"], {**cast, "output_grad": u})[0]
        numeric = _richardson(lambda h, u=u, v=v: _central(fwd, out_name, cast, wrt, u, v, h), eps)
        worst = max(worst, _relative_gap(numeric, saliency, v))
    return worst


def one_session_at_a_time_vjp_error(
    make_forward: Callable[[], ort.InferenceSession],
    make_explain: Callable[[], ort.InferenceSession],
    feeds: Mapping[str, np.ndarray],
    wrt: str,
    out_shape: tuple[int, ...],
    dtype: type,
    eps: float,
    directions: int,
    seed: int,
) -> float:
    """vjp_error's comparison on sessions of whole models, one alive at a time: the explain
    session gives every direction's saliency and is dropped before the forward session is
    built (for VGG-19 the two together were the test suite's peak memory)."""
    rng = np.random.default_rng(seed)
    cast = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in feeds.items()}
    pairs = [
        (
            np.asarray(rng.standard_normal(out_shape), dtype=dtype),
            np.asarray(rng.standard_normal(cast[wrt].shape), dtype=dtype),
        )
        for _ in range(directions)
    ]
    explain = make_explain()
    saliencies = [explain.run(["saliency"], {**cast, "output_grad": u})[0] for u, _ in pairs]
    del explain
    forward = make_forward()
    out_name = forward.get_outputs()[0].name
    worst = 0.0
    for (u, v), saliency in zip(pairs, saliencies):
        numeric = _richardson(
            lambda h, u=u, v=v: _central(forward, out_name, cast, wrt, u, v, h), eps
        )
        worst = max(worst, _relative_gap(numeric, saliency, v))
    return worst
