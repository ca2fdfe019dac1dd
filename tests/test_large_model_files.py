"""tests/helpers/model_files.py: a model written with external weights is the same model.

Oracles: onnx's own loader (which reads external data back), and onnxruntime run on the
model's bytes against the same model run from the written file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import model_files


def _model() -> onnx.ModelProto:
    """y = (x @ W + b) * s: W large (external), b small (inline), s in float_data."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 300)).astype(np.float32)  # 76.8 kB
    b = rng.standard_normal(8).astype(np.float32)  # 32 B
    s = helper.make_tensor("s", TensorProto.FLOAT, [1], [0.5])  # typed, not raw
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Slice", ["xw", "start", "stop", "axis"], ["xw8"]),
        helper.make_node("Add", ["xw8", "b"], ["z"]),
        helper.make_node("Mul", ["z", "s"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([8], np.int64), "stop"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
        s,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_written_model_loads_back_equal_and_the_original_is_untouched(tmp_path: Path) -> None:
    model = _model()
    before = model.SerializeToString()
    path = tmp_path / "m.onnx"
    model_files.save_with_external_weights(model, path)
    assert model.SerializeToString() == before
    written = onnx.load(str(path), load_external_data=False)
    external = {
        t.name: {e.key: e.value for e in t.external_data}
        for t in written.graph.initializer
        if t.data_location == TensorProto.EXTERNAL
    }
    assert list(external) == ["W"]  # the small ones stay inline
    assert int(external["W"]["offset"]) % model_files.ALIGN == 0
    back = onnx.load(str(path))
    assert [n.SerializeToString() for n in back.graph.node] == [
        n.SerializeToString() for n in model.graph.node
    ]
    assert [t.name for t in back.graph.initializer] == [t.name for t in model.graph.initializer]
    for got, want in zip(back.graph.initializer, model.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(got), numpy_helper.to_array(want))


def test_onnxruntime_computes_the_same_from_the_file(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "m.onnx"
    model_files.save_with_external_weights(model, path)
    x = {"x": np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)}
    from_bytes = ort.InferenceSession(model.SerializeToString()).run(["y"], x)[0]
    from_file = ort.InferenceSession(str(path)).run(["y"], x)[0]
    np.testing.assert_array_equal(from_file, from_bytes)


def test_loadable_gives_bytes_when_small_and_a_temporary_file_when_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model()
    with model_files.loadable(model) as source:
        assert source == model.SerializeToString()
    monkeypatch.setattr(model_files, "BY_FILE_BYTES", 1000)
    with model_files.loadable(model) as source:
        assert isinstance(source, str)
        folder = Path(source).parent
        assert (folder / model_files.WEIGHTS).stat().st_size > 64 * 300 * 4 - 1
        session = ort.InferenceSession(source)
    assert not folder.exists()  # deleted on exit; the session loaded before that
    x = np.ones((2, 64), np.float32)
    (want,) = ort.InferenceSession(model.SerializeToString()).run(["y"], {"x": x})
    np.testing.assert_array_equal(session.run(["y"], {"x": x})[0], want)


def test_external_input_is_refused(tmp_path: Path) -> None:
    model = _model()
    model.graph.initializer[0].data_location = TensorProto.EXTERNAL
    with pytest.raises(ValueError, match="W: its data is external already"):
        model_files.save_with_external_weights(model, tmp_path / "m.onnx")
