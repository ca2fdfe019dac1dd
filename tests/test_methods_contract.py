"""The layer methods' contract: which layer Grad-CAM takes, what it refuses, what it builds.

Numbers against Captum and pytorch-grad-cam: test_methods_parity.py; on pretrained models
and two runtimes: test_methods_real_models.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxplain.graph_rewrite import (
    ALL_METHODS,
    METHODS,
    REGISTRY,
    RewriteError,
    build_explain_model,
    check,
    default_layer,
)

from helpers.fd import session
from helpers.tiny import tiny_classifier

X = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
SEED = np.eye(5, dtype=np.float32)[[1, 3]]


def test_every_method_is_registered_with_described_parameters() -> None:
    assert METHODS == ("vanilla", "deconvnet", "guided")  # what the service served first
    assert {"gradcam", "guided_gradcam", "input_x_gradient"} <= set(ALL_METHODS)
    for spec in REGISTRY.values():
        assert spec.summary
        for param in spec.params:
            assert param.description and "\n" not in param.description
            if param.choices is not None:
                assert param.default in param.choices


def se_classifier() -> onnx.ModelProto:
    """conv/relu → squeeze-excitation (pool, 1x1 conv, sigmoid, multiply) → relu → pool → fc:
    the excitation's pool must not be taken for the head's."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "se_w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
        "fc_w": rng.standard_normal((5, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["se_pool"]),
        helper.make_node("Conv", ["se_pool", "se_w"], ["se_conv"]),
        helper.make_node("Sigmoid", ["se_conv"], ["se_gate"]),
        helper.make_node("Mul", ["r1", "se_gate"], ["excited"]),
        helper.make_node("Relu", ["excited"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(w, n) for n, w in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_default_layer_is_before_the_head_not_inside_a_squeeze_excitation() -> None:
    assert default_layer(tiny_classifier()) == "r2"
    assert default_layer(se_classifier()) == "r2"


def pooled_norm_classifier() -> onnx.ModelProto:
    """conv/relu → pool → a channels-last LayerNorm (transpose, norm, transpose back) → fc,
    as timm's ConvNeXt, MaxViT and PoolFormer heads are: the norm's [N, 1, 1, C] is the
    pooled vector, not a feature map."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "ln_scale": np.ones(4, np.float32),
        "ln_bias": np.zeros(4, np.float32),
        "fc_w": rng.standard_normal((5, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"]),
        helper.make_node("Transpose", ["gap"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["nhwc", "ln_scale", "ln_bias"], ["ln"], axis=-1),
        helper.make_node("Transpose", ["ln"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Flatten", ["nchw"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled_norm",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(w, n) for n, w in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_default_layer_is_before_the_pool_not_in_a_channels_last_norm_after_it() -> None:
    assert default_layer(pooled_norm_classifier()) == "r1"


def test_a_spatial_output_has_no_default_layer_and_gradcam_asks_for_one() -> None:
    # Cut at the last ReLU: the explained output is a feature map, as a detector's is.
    model = tiny_classifier()
    assert default_layer(model, output_name="r2") is None
    with pytest.raises(RewriteError, match=r"no default layer.*--layer"):
        build_explain_model(model, "gradcam", output_name="r2")
    explain = build_explain_model(model, "gradcam", output_name="r2", params={"layer": "r1"})
    grad = np.ones((2, 6, 4, 4), np.float32)
    (cam,) = session(explain).run(["saliency"], {"image": X, "output_grad": grad})
    assert cam.shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"layer": "nowhere"}, "no tensor named 'nowhere'"),
        ({"layer": "flat"}, "must be 3-D to 5-D.*rank 2"),
        ({"layer": "w1"}, "no tensor named 'w1'"),  # a weight, not a layer's output
        ({"cam_style": "jet"}, "cam_style.*captum, pytorch-grad-cam"),
        ({"cam_style": 1}, "cam_style.*takes a str"),
        ({"steps": 4}, "no parameter 'steps'"),
    ],
)
def test_bad_parameters_are_refused_by_name(params: dict[str, object], message: str) -> None:
    with pytest.raises(RewriteError, match=message):
        build_explain_model(tiny_classifier(), "gradcam", params=params)


def test_a_layer_off_the_path_is_refused() -> None:
    # c1 only feeds r1... but a second output branch is not between input and logits.
    model = tiny_classifier()
    model.graph.node.append(helper.make_node("Relu", ["image"], ["side"]))
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    with pytest.raises(RewriteError, match="'side' is not a float tensor between"):
        build_explain_model(model, "gradcam", params={"layer": "side"})


def test_gradcam_map_is_one_channel_and_the_walk_stops_at_the_layer() -> None:
    model = tiny_classifier()
    gradcam = build_explain_model(model, "gradcam")
    guided = build_explain_model(model, "guided")
    onnx.checker.check_model(gradcam, full_check=True)
    dims = [d.dim_param or d.dim_value for d in gradcam.graph.output[-1].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 8, 8]
    # Grad-CAM's walk ends at r2, after the last conv: guided backprop's walk to the
    # input has a convolution more for each of conv2 and conv1 (both walks spread the
    # global pool's gradient with one depthwise Conv).
    forward = len(model.graph.node)

    def convs(explain: onnx.ModelProto) -> int:
        return sum(n.op_type in ("Conv", "ConvTranspose") for n in explain.graph.node[forward:])

    assert convs(gradcam) + 2 == convs(guided)


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_map() -> None:
    model = tiny_classifier()
    feeds = {"image": X, "output_grad": SEED}

    def run(method: str, **params: object) -> np.ndarray:
        explain = build_explain_model(model, method, params=params)
        return session(explain).run(["saliency"], feeds)[0]

    for style in ("captum", "pytorch-grad-cam"):
        expected = run("guided") * run("gradcam", cam_style=style)
        got = run("guided_gradcam", cam_style=style)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(run("input_x_gradient"), X * run("vanilla"), rtol=1e-6)


def test_check_takes_each_methods_parameters() -> None:
    model = tiny_classifier()
    check(model, methods=["gradcam"], params={"gradcam": {"layer": "r1"}})
    with pytest.raises(RewriteError, match="no tensor named 'nowhere'"):
        check(model, methods=["gradcam"], params={"gradcam": {"layer": "nowhere"}})


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onnxplain", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,
    )


def test_cli_converts_gradcam_with_a_layer_and_style(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(), str(path))
    out = tmp_path / "cam.onnx"
    args = ["--method", "gradcam", "--layer", "r1", "--cam-style", "pytorch-grad-cam"]
    result = run_cli("convert", path, "-o", out, *args)
    assert result.returncode == 0, result.stderr
    (cam,) = session(onnx.load(str(out))).run(["saliency"], {"image": X, "output_grad": SEED})
    # pytorch-grad-cam's style: every map min-max normalised to [0, 1].
    assert cam.shape == (2, 1, 8, 8) and np.allclose(cam.max(axis=(1, 2, 3)), 1, atol=1e-6)
    checked = run_cli("check", path, *args)
    assert checked.returncode == 0 and "Grad-CAM layer: 'r1'" in checked.stdout
    bad = run_cli("convert", path, "-o", out, "--method", "gradcam", "--layer", "nowhere")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "no tensor named 'nowhere'" in bad.stderr
