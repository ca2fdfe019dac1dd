"""The explain-model contract: what `build_explain_model` keeps, adds and refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxplain.graph_rewrite import (
    RewriteError,
    UnsupportedOpsError,
    build_explain_model,
    check,
    default_input,
    default_output,
)

from helpers.fd import assert_vjp_matches, session
from helpers.tiny import tiny_classifier

X = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize("method", ["vanilla", "deconvnet", "guided"])
def test_keeps_every_input_and_output_and_their_values(method: str) -> None:
    model = tiny_classifier()
    explain = build_explain_model(model, method)
    assert [i.name for i in explain.graph.input] == ["image", "output_grad"]
    assert [o.name for o in explain.graph.output] == ["probs", "saliency"]
    assert explain.graph.output[0].type == model.graph.output[0].type
    onnx.checker.check_model(explain, full_check=True)
    assert {n.domain for n in explain.graph.node} <= {"", "ai.onnx"}

    grad = np.eye(5, dtype=np.float32)[[1, 3]]
    probs, saliency = session(explain).run(None, {"image": X, "output_grad": grad})
    (expected,) = session(model).run(None, {"image": X})
    np.testing.assert_array_equal(probs, expected)
    assert saliency.shape == X.shape and np.isfinite(saliency).all()


def test_seed_is_shaped_like_the_logits_and_the_batch_stays_dynamic() -> None:
    explain = build_explain_model(tiny_classifier(batch="N"))
    grad_input = next(i for i in explain.graph.input if i.name == "output_grad")
    saliency = next(o for o in explain.graph.output if o.name == "saliency")
    assert _dims(grad_input) == ["N", 5]
    assert _dims(saliency) == ["N", 3, 8, 8]
    sess = session(explain)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 8, 8)).astype(np.float32)
        out = sess.run(["saliency"], {"image": x, "output_grad": np.ones((n, 5), np.float32)})
        assert out[0].shape == (n, 3, 8, 8)


def test_default_output_is_the_logits_behind_softmax_and_shape_ops() -> None:
    model = tiny_classifier()
    assert default_output(model) == "logits"
    # Softmax followed by a shape-only op (some exporters add one) is still seen through.
    model.graph.node.append(helper.make_node("Identity", ["probs"], ["probs_out"]))
    model.graph.output[0].name = "probs_out"
    assert default_output(model) == "logits"


def test_default_output_is_the_first_output_when_it_is_not_a_softmax() -> None:
    model = tiny_classifier()
    del model.graph.node[-1]
    model.graph.output[0].name = "logits"
    assert default_output(model) == "logits"
    model.graph.node[-1].output[0] = "scores"
    model.graph.output[0].name = "scores"
    assert default_output(model) == "scores"


def test_default_input_skips_weights_listed_as_inputs() -> None:
    model = tiny_classifier(opset=9, weights_as_inputs=True)
    assert default_input(model) == "image"
    explain = build_explain_model(model, "guided")
    onnx.checker.check_model(explain, full_check=True)


def test_vanilla_saliency_is_the_gradient_of_the_chosen_logit() -> None:
    assert_vjp_matches(
        tiny_classifier(), {"image": X}, wrt="image", output="logits", reference_forward=True
    )


def test_intermediate_tensors_can_be_explained() -> None:
    model = tiny_classifier()
    explain = build_explain_model(model, "vanilla", input_name="r1", output_name="c2")
    grad_input = next(i for i in explain.graph.input if i.name == "output_grad")
    saliency = next(o for o in explain.graph.output if o.name == "saliency")
    assert _dims(grad_input) == ["batch", 6, 4, 4]
    assert _dims(saliency) == ["batch", 4, 8, 8]
    assert_vjp_matches(model, {"image": X}, wrt="image", output="c2", reference_forward=True)


def test_refuses_names_already_in_the_model_and_takes_others() -> None:
    model = tiny_classifier()
    model.graph.node[1].output[0] = "saliency"
    model.graph.node[2].input[0] = "saliency"
    with pytest.raises(RewriteError, match="saliency"):
        build_explain_model(model)
    explain = build_explain_model(model, saliency_name="relevance")
    assert explain.graph.output[-1].name == "relevance"


def test_unknown_tensor_names_are_refused() -> None:
    with pytest.raises(RewriteError, match="no tensor named 'nope'"):
        build_explain_model(tiny_classifier(), input_name="nope")


def test_output_that_does_not_depend_on_the_input_is_refused() -> None:
    model = tiny_classifier()
    with pytest.raises(RewriteError, match="does not depend"):
        build_explain_model(model, input_name="r2", output_name="c1")


def test_missing_rules_are_all_listed_before_anything_is_built() -> None:
    model = tiny_classifier(opset=13)
    # Two ops no rule covers, one of them in a custom domain.
    model.graph.node[1].op_type = "Det"
    model.graph.node[3].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpsError) as raised:
        build_explain_model(model)
    missing = {(m.op_type, m.node_name, m.opset) for m in raised.value.missing}
    assert missing == {("Det", "relu1", 13), ("Relu", "relu2", 13)}
    with pytest.raises(UnsupportedOpsError) as checked:
        check(model)
    listed = {(m.op_type, m.node_name) for m in checked.value.missing}
    assert listed == {("Det", "relu1"), ("Relu", "relu2")}


def test_non_float_inputs_are_never_explained() -> None:
    model = tiny_classifier()
    model.graph.input.insert(0, helper.make_tensor_value_info("ids", TensorProto.INT64, [1]))
    assert default_input(model) == "image"


NEWEST_OPSET = onnx.defs.onnx_opset_version()


@pytest.mark.parametrize("opset", sorted({9, 11, 13, 17, 18, 21, NEWEST_OPSET}))
def test_every_opset_gives_the_same_explanation(opset: int) -> None:
    # Older models are converted up to opset 17; newer ones are read as they are.
    grad = np.eye(5, dtype=np.float32)[[1, 2]]
    feeds = {"image": X, "output_grad": grad}
    reference = session(build_explain_model(tiny_classifier(opset=17), "guided"))
    explain = build_explain_model(tiny_classifier(opset=opset), "guided")
    onnx.checker.check_model(explain, full_check=True)
    expected = reference.run(["saliency"], feeds)[0]
    np.testing.assert_allclose(
        session(explain).run(["saliency"], feeds)[0], expected, rtol=1e-5, atol=1e-6
    )


def test_the_given_model_is_left_untouched() -> None:
    # Also with a large weight, which normalisation sets aside and puts back.
    model = tiny_classifier(opset=11)
    model.graph.initializer[2].CopyFrom(
        onnx.numpy_helper.from_array(np.ones((6, 4, 3, 3), np.float32) * 0.1, "w2")
    )
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.arange(5000, dtype=np.float32), "unused_large")
    )
    before = model.SerializeToString()
    explain = build_explain_model(model, "guided")
    assert model.SerializeToString() == before
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in explain.graph.initializer}
    np.testing.assert_array_equal(weights["unused_large"], np.arange(5000, dtype=np.float32))


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("batch", [-1, 0, "?", None])
def test_unknown_dimensions_in_any_encoding_stay_dynamic(batch: int | str | None) -> None:
    # PaddleOCR's classifier stores [-1, 3, "?", "?"]: -1 is not a valid dim_value, and two
    # axes named "?" would read as "equal". Both mean "unknown"; so does an unset dim.
    model = tiny_classifier()
    for vi in (model.graph.input[0], model.graph.output[0]):
        dims = vi.type.tensor_type.shape.dim
        dims[0].Clear()
        if isinstance(batch, int):
            dims[0].dim_value = batch
        elif batch is not None:
            dims[0].dim_param = batch
    for axis in (2, 3):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = "?"
    explain = build_explain_model(model, "guided")
    grad_input = next(i for i in explain.graph.input if i.name == "output_grad")
    saliency = next(o for o in explain.graph.output if o.name == "saliency")
    for vi, axes in ((grad_input, [0]), (saliency, [0, 2, 3]), (explain.graph.input[0], [0, 2])):
        for axis in axes:
            dim = vi.type.tensor_type.shape.dim[axis]
            assert not dim.HasField("dim_value"), (vi.name, axis)
            assert dim.dim_param not in ("?", "-1"), (vi.name, axis)
    sess = session(explain)
    for n, size in ((1, 8), (3, 12)):
        x = np.random.default_rng(n).standard_normal((n, 3, size, size)).astype(np.float32)
        out = sess.run(["saliency"], {"image": x, "output_grad": np.ones((n, 5), np.float32)})
        assert out[0].shape == x.shape


def test_input_shapes_are_fixed_before_anything_else() -> None:
    model = tiny_classifier(batch=1)  # the exporter's batch 1 everywhere, outputs included
    explain = build_explain_model(model, "guided", input_shapes={"image": [2, 3, 16, 16]})
    grad_input = next(i for i in explain.graph.input if i.name == "output_grad")
    assert _dims(explain.graph.input[0]) == [2, 3, 16, 16]
    assert _dims(grad_input) == [2, 5]
    assert _dims(explain.graph.output[-1]) == [2, 3, 16, 16]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    grad = np.eye(5, dtype=np.float32)[[0, 4]]
    saliency = session(explain).run(["saliency"], {"image": x, "output_grad": grad})[0]
    free = tiny_classifier(batch="N")
    for axis in (2, 3):
        free.graph.input[0].type.tensor_type.shape.dim[axis].Clear()
    reference = build_explain_model(free, "guided")
    expected = session(reference).run(["saliency"], {"image": x, "output_grad": grad})[0]
    np.testing.assert_allclose(saliency, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"images": [1, 3, 8, 8]}, "no input 'images' \\(inputs: 'image'\\)"),
        ({"image": [1, 3, 8]}, "rank 4, 3 dimensions given"),
        ({"image": [1, 3, 0, 8]}, "must be positive"),
    ],
)
def test_bad_input_shapes_are_refused_by_name(shapes: dict[str, list[int]], message: str) -> None:
    with pytest.raises(RewriteError, match=message):
        build_explain_model(tiny_classifier(), input_shapes=shapes)
    with pytest.raises(RewriteError, match=message):
        check(tiny_classifier(), input_shapes=shapes)


def test_check_fails_where_the_build_fails_not_only_where_a_rule_is_missing() -> None:
    # Every op has a rule, but BatchNormalization in training mode is refused by its rule
    # during the build: check must say so too, with convert's message.
    model = tiny_classifier()
    model.graph.node[1].CopyFrom(
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn_s", "bn_b", "bn_m", "bn_v"],
            ["r1"],
            name="bn",
            training_mode=1,
        )
    )
    for name, value in (("bn_s", 1.0), ("bn_b", 0.0), ("bn_m", 0.0), ("bn_v", 1.0)):
        model.graph.initializer.append(
            onnx.numpy_helper.from_array(np.full(4, value, np.float32), name)
        )
    with pytest.raises(RewriteError) as built:
        build_explain_model(model, "guided")
    with pytest.raises(RewriteError) as checked:
        check(model)
    assert "training mode" in str(built.value)
    assert str(checked.value) == str(built.value)
