"""The released typed fields of ExplainRequest are aliases of the generic `parameters`:
an old-style request (only typed fields, the method by its enum) gets exactly the saliency
of the same request through `method_name` and `parameters`, over a real loopback socket.
A parameter given both ways with different values is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnxplain.server import Explainer, Service

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import to_array, to_tensor

from helpers.server_support import DEMO, SAMPLES, make_repository, running_server


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[explain_pb2_grpc.ExplainServiceStub]:
    running: tuple[Service, Explainer]
    with running_server(make_repository(tmp_path_factory.mktemp("models"))) as running:
        channel = grpc.insecure_channel(f"127.0.0.1:{running[0].port}")
        yield explain_pb2_grpc.ExplainServiceStub(channel)
        channel.close()


X = np.concatenate([np.load(p) for p in sorted(SAMPLES.glob("*.npy"))])[:3]
START = np.random.default_rng(4).standard_normal((1, *X.shape[1:])).astype(np.float32)
LAYER = [n.output[0] for n in onnx.load(DEMO / "model.onnx").graph.node if n.op_type == "Relu"][1]


def _value(v: Any) -> pb.ParamValue:
    if isinstance(v, np.ndarray):
        return pb.ParamValue(tensor_value=to_tensor(v))
    if isinstance(v, bool):
        return pb.ParamValue(bool_value=v)
    if isinstance(v, int):
        return pb.ParamValue(int_value=v)
    if isinstance(v, float):
        return pb.ParamValue(float_value=v)
    return pb.ParamValue(string_value=v)


# (the old request's fields, the same request by name and parameters)
CASES = {
    "ig_steps_and_baseline_tensor": (
        dict(
            method=pb.METHOD_INTEGRATED_GRADIENTS,
            steps=6,
            baseline=pb.Baseline(tensor=to_tensor(START)),
        ),
        ("integrated_gradients", {"steps": 6, "baseline_tensor": START}),
    ),
    "ig_constant_baseline_trapezoid": (
        dict(
            method=pb.METHOD_INTEGRATED_GRADIENTS,
            steps=5,
            integration=pb.INTEGRATION_RIEMANN_TRAPEZOID,
            baseline=pb.Baseline(constant=0.25),
        ),
        (
            "integrated_gradients",
            {"steps": 5, "integration": "riemann_trapezoid", "baseline": "constant:0.25"},
        ),
    ),
    "smoothgrad_samples_seed_sigma_gradient": (
        dict(method=pb.METHOD_SMOOTHGRAD, samples=4, seed=7, sigma=0.25, gradient=pb.METHOD_GUIDED),
        ("smoothgrad", {"samples": 4, "seed": 7, "sigma": 0.25, "gradient": "guided"}),
    ),
    "gradcam_layer_and_style": (
        dict(method=pb.METHOD_GRADCAM, layer=LAYER, cam_style=pb.CAM_STYLE_PYTORCH_GRAD_CAM),
        ("gradcam", {"layer": LAYER, "cam_style": "pytorch-grad-cam"}),
    ),
    "guided_gradcam_default_layer": (
        dict(method=pb.METHOD_GUIDED_GRADCAM),
        ("guided_gradcam", {}),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_typed_fields_and_parameters_give_the_same_saliency(
    stub: explain_pb2_grpc.ExplainServiceStub, case: str
) -> None:
    fields, (name, params) = CASES[case]
    old = stub.Explain(pb.ExplainRequest(model="digits", tensor=to_tensor(X), **fields), timeout=60)
    new = stub.Explain(
        pb.ExplainRequest(
            model="digits",
            tensor=to_tensor(X),
            method_name=name,
            parameters={k: _value(v) for k, v in params.items()},
        ),
        timeout=60,
    )
    np.testing.assert_array_equal(to_array(new.saliency), to_array(old.saliency))
    assert not np.allclose(to_array(old.saliency), 0)
    for response in (old, new):
        assert response.method_name == name
        assert response.method == fields["method"]
    # The released output fields and the generic map say the same.
    assert old.outputs.keys() == new.outputs.keys()
    if "completeness_gap" in old.outputs:
        for r in (old, new):
            gap = to_array(r.outputs["completeness_gap"].tensor_value)
            np.testing.assert_array_equal(np.asarray(r.completeness_gap, np.float32), gap)
    if "seed" in params:
        assert old.seed == new.seed == new.outputs["seed"].int_value == params["seed"]
    if "layer" in old.outputs:
        assert old.layer == old.outputs["layer"].string_value == new.layer != ""


def test_the_typed_alias_and_parameters_must_agree(
    stub: explain_pb2_grpc.ExplainServiceStub,
) -> None:
    def explain(**fields: Any) -> pb.ExplainResponse:
        return stub.Explain(
            pb.ExplainRequest(model="digits", tensor=to_tensor(X[:1]), **fields), timeout=60
        )

    same = explain(method=pb.METHOD_INTEGRATED_GRADIENTS, steps=4, parameters={"steps": _value(4)})
    assert same.method_name == "integrated_gradients"
    refused = [
        dict(method=pb.METHOD_INTEGRATED_GRADIENTS, steps=4, parameters={"steps": _value(5)}),
        dict(method=pb.METHOD_SMOOTHGRAD, method_name="integrated_gradients"),
        dict(
            method=pb.METHOD_INTEGRATED_GRADIENTS,
            baseline=pb.Baseline(tensor=to_tensor(START)),
            parameters={"baseline": _value("zeros")},
        ),
    ]
    messages = [
        "'steps' is given twice",
        "method_name 'integrated_gradients'",
        "'baseline' is 'input'",
    ]
    for fields, message in zip(refused, messages):
        with pytest.raises(grpc.RpcError) as raised:
            explain(**fields)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (raised.value.details() or ""), raised.value.details()
