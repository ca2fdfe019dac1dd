"""Shape-family rules against central finite differences, static and dynamic batch."""

from __future__ import annotations

import numpy as np
import pytest
from onnxplain.graph_rewrite import build_explain_model

from helpers.fd import assert_vjp_matches, dynamic_batch, session, single_op_model

RNG = np.random.default_rng(5)
X = np.asarray(RNG.standard_normal((2, 3, 4, 5)), dtype=np.float32)


def ints(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


I32_MAX = 2**31 - 1

# (op, attrs, constants, opset); each runs on X with a static and a dynamic batch.
CASES = [
    ("Reshape", {}, {"shape": ints(2, 12, 5)}, 17),
    ("Reshape", {}, {"shape": ints(0, -1)}, 17),
    ("Flatten", {"axis": 2}, {}, 17),
    ("Unsqueeze", {}, {"axes": ints(1, -1)}, 17),
    ("Transpose", {"perm": [0, 2, 3, 1]}, {}, 17),
    ("Transpose", {}, {}, 17),
    ("Expand", {}, {"shape": ints(3, 2, 3, 4, 5)}, 17),
    ("Split", {"axis": 1}, {"split": ints(1, 2)}, 17),
    ("Split", {"axis": -1, "num_outputs": 2}, {}, 18),
    ("Split", {"axis": 2}, {}, 17),
    ("Slice", {}, {"starts": ints(1), "ends": ints(3), "axes": ints(2)}, 17),
    ("Slice", {}, {"starts": ints(-4, 1), "ends": ints(I32_MAX, -1), "axes": ints(3, 1)}, 17),
    (
        "Slice",
        {},
        {"starts": ints(0, 4), "ends": ints(100, -100), "axes": ints(2, 3), "steps": ints(2, -2)},
        17,
    ),
    (
        "Slice",
        {},
        {"starts": ints(-1), "ends": ints(-100), "axes": ints(-1), "steps": ints(-1)},
        17,
    ),
    ("Slice", {}, {"starts": ints(1), "ends": ints(4), "axes": ints(3), "steps": ints(3)}, 17),
    ("Slice", {}, {"starts": ints(1, 0), "ends": ints(I32_MAX, 3), "axes": ints(0, 1)}, 17),
    ("Gather", {"axis": 1}, {"idx": np.asarray(0, np.int64)}, 17),
    ("Gather", {"axis": -1}, {"idx": np.asarray(-2, np.int64)}, 17),
    ("Gather", {"axis": 2}, {"idx": ints(3, 0, 3, -1)}, 17),
    ("Gather", {"axis": 3}, {"idx": np.asarray([[0, 4], [4, 2]], np.int64)}, 17),
    ("Gather", {"axis": 0}, {"idx": ints(1, 1, 0)}, 17),
    ("Pad", {}, {"pads": ints(0, 1, 2, 0, 0, 0, 1, 3)}, 17),
    ("Pad", {}, {"pads": ints(0, 0, -1, 2, 0, 1, 1, -2)}, 17),
    ("Pad", {"mode": "edge"}, {"pads": ints(0, 0, 2, 1, 0, 0, 1, 3)}, 17),
    ("Pad", {"mode": "reflect"}, {"pads": ints(0, 1, 2, 3, 0, 2, 3, 1)}, 17),
    ("Pad", {"mode": "wrap"}, {"pads": ints(0, 0, 2, 1, 0, 0, 1, 5)}, 19),
    ("Pad", {}, {"pads": ints(1, 2, 2, 0), "value": np.float32(0.5), "axes": ints(-1, 1)}, 18),
    ("Tile", {}, {"repeats": ints(1, 2, 1, 3)}, 17),
    ("Tile", {}, {"repeats": ints(2, 1, 2, 1)}, 17),
    ("DepthToSpace", {"blocksize": 2}, {}, 17),
    ("DepthToSpace", {"blocksize": 2, "mode": "CRD"}, {}, 17),
    ("SpaceToDepth", {"blocksize": 2}, {}, 17),
]


def moves_the_batch(op: str, attrs: dict, consts: dict) -> bool:
    """Cases that slice, index or prepend to the first axis, which then is not the batch:
    they run with a static batch only."""
    if op == "Gather":
        return attrs.get("axis", 0) == 0
    if op == "Slice":
        return 0 in consts["axes"].tolist()
    if op == "Expand":
        return len(consts["shape"]) > X.ndim
    return False


def case_input(op: str) -> np.ndarray:
    if op == "DepthToSpace":
        return np.asarray(RNG.standard_normal((2, 8, 3, 2)), dtype=np.float32)
    if op == "SpaceToDepth":
        return np.asarray(RNG.standard_normal((2, 3, 4, 6)), dtype=np.float32)
    return X


@pytest.mark.parametrize(
    ("op", "attrs", "consts", "opset", "dynamic"),
    [
        pytest.param(*case, dynamic, id=f"{case[0]}-{i}-{'dynamic' if dynamic else 'static'}")
        for i, case in enumerate(CASES)
        for dynamic in (False, True)
        if not (dynamic and moves_the_batch(*case[:3]))
    ],
)
def test_shape_op(op: str, attrs: dict, consts: dict, opset: int, dynamic: bool):
    x = case_input(op)
    n_outputs = 2 if op == "Split" and ("split" in consts or "num_outputs" in attrs) else 1
    n_outputs = 4 if op == "Split" and n_outputs == 1 else n_outputs
    model = single_op_model(op, {"x": x}, attrs, consts, n_outputs=n_outputs, opset=opset)
    if dynamic:
        model = dynamic_batch(model)
    for out in [f"y{i}" for i in range(n_outputs)]:
        # Each Split output alone: the others get no gradient and contribute zeros.
        assert_vjp_matches(model, {"x": x}, wrt="x", output=out)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis: int) -> None:
    a, b = X, np.asarray(RNG.standard_normal((2, 3, 4, 5)), dtype=np.float32)
    c = np.take(X, [0], axis=axis)  # a constant part between the two inputs
    model = single_op_model(
        "Concat", {"a": a, "b": b}, {"axis": axis}, {"c": c}, input_order=["a", "c", "b"]
    )
    for wrt in ("a", "b"):
        assert_vjp_matches(model, {"a": a, "b": b}, wrt=wrt)


def test_concat_dynamic_batch() -> None:
    a, b = X, X[:, :2]
    model = dynamic_batch(single_op_model("Concat", {"a": a, "b": b}, {"axis": 1}))
    for wrt in ("a", "b"):
        assert_vjp_matches(model, {"a": a, "b": b}, wrt=wrt)


def test_squeeze() -> None:
    x = X[:, :1]
    model = single_op_model("Squeeze", {"x": x}, constants={"axes": ints(1)})
    assert_vjp_matches(model, {"x": x}, wrt="x")
    assert_vjp_matches(dynamic_batch(model), {"x": x}, wrt="x")


@pytest.mark.parametrize(
    ("axis", "idx", "dynamic"),
    [
        (1, ints(0, 2, 2), False),
        (-1, np.asarray([[4, -1], [0, 1]], np.int64), True),
        (2, np.asarray(-3, np.int32), True),
    ],
)
def test_gather_computed_indices(axis: int, idx: np.ndarray, dynamic: bool) -> None:
    """Indices fed at run time (as dynamo's as_strided computes them from shapes):
    repeated and negative ones included, int32 too."""
    model = single_op_model("Gather", {"x": X, "idx": idx}, {"axis": axis})
    if dynamic:
        model = dynamic_batch(model, {"x", "y0"})
    assert_vjp_matches(model, {"x": X, "idx": idx}, wrt="x")


BATCH_AXIS_CASES = [
    ("Slice", {}, {"starts": ints(1), "ends": ints(I32_MAX), "axes": ints(0)}),
    ("Gather", {"axis": 0}, {"idx": ints(1, 1, 0)}),
    ("Tile", {}, {"repeats": ints(2, 1, 1, 2)}),
]


@pytest.mark.parametrize(("op", "attrs", "consts"), BATCH_AXIS_CASES, ids=lambda c: str(c)[:8])
def test_dynamic_batch_axis_itself(op: str, attrs: dict, consts: dict) -> None:
    model = dynamic_batch(single_op_model(op, {"x": X}, attrs, consts))
    assert_vjp_matches(model, {"x": X}, wrt="x")


def test_slice_of_a_dynamic_axis_from_its_end() -> None:
    # More slices of dynamic axes: test_rules_shape_dynamic.py.
    consts = {"starts": ints(-1), "ends": ints(I32_MAX), "axes": ints(0)}
    model = dynamic_batch(single_op_model("Slice", {"x": X}, {}, consts))
    assert_vjp_matches(model, {"x": X}, wrt="x")


@pytest.mark.parametrize("computed", [False, True], ids=["constant-indices", "computed-indices"])
def test_gather_with_repeated_indices_in_float16(computed: bool) -> None:
    """Repeated indices add up through ScatterElements(add), which onnxruntime's CPU kernel
    has in float32 only: the float16 rule adds in float32 and casts back. The reference
    is numpy's np.add.at of dY (float64) at the wrapped indices."""
    x = X.astype(np.float16)
    idx = ints(0, 2, 2, -1)
    feeds = {"x": x, "idx": idx} if computed else {"x": x}
    model = single_op_model("Gather", feeds, {"axis": 1}, {} if computed else {"idx": idx})
    explain = build_explain_model(model, "vanilla", output_name="y0")
    dy = RNG.standard_normal((2, 4, 4, 5)).astype(np.float16)
    (got,) = session(explain).run(["saliency"], {**feeds, "output_grad": dy})
    want = np.zeros(X.shape)
    np.add.at(want, (slice(None), idx % X.shape[1]), dy.astype(np.float64))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-3, atol=2e-3)
