"""The gRPC servicer: decode the request, call the core, encode the answer. Nothing else.

Errors are not handled here: the core's exceptions propagate to `app.error_mapping`.
"""

from __future__ import annotations

import time
from typing import Any

from onnxplain.graph_rewrite import Method
from onnxplain.graph_rewrite.methods import ALL_METHODS, REGISTRY
from onnxplain.render import HeatmapOptions, Sign
from onnxplain.sanity import SanityReport, summarise

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import dtype_code, to_array, to_tensor

from ...core.errors import InvalidInput
from ...core.explainer import ExplainCall, Explainer, Explanation
from ...core.method_params import MethodOptions, parameters
from ...store.repository import FailedModel, LoadedModel, Spec

_METHOD_TO_WIRE: dict[Method, pb.Method] = {
    "vanilla": pb.METHOD_VANILLA,
    "deconvnet": pb.METHOD_DECONVNET,
    "guided": pb.METHOD_GUIDED,
    "gradcam": pb.METHOD_GRADCAM,
    "guided_gradcam": pb.METHOD_GUIDED_GRADCAM,
    "input_x_gradient": pb.METHOD_INPUT_X_GRADIENT,
    "smoothgrad": pb.METHOD_SMOOTHGRAD,
    "integrated_gradients": pb.METHOD_INTEGRATED_GRADIENTS,
}
_METHOD_FROM_WIRE = {wire: name for name, wire in _METHOD_TO_WIRE.items()}
_INTEGRATIONS = {
    pb.INTEGRATION_GAUSS_LEGENDRE: "gausslegendre",
    pb.INTEGRATION_RIEMANN_TRAPEZOID: "riemann_trapezoid",
    pb.INTEGRATION_RIEMANN_LEFT: "riemann_left",
    pb.INTEGRATION_RIEMANN_RIGHT: "riemann_right",
    pb.INTEGRATION_RIEMANN_MIDDLE: "riemann_middle",
}
_CAM_STYLES = {pb.CAM_STYLE_CAPTUM: "captum", pb.CAM_STYLE_PYTORCH_GRAD_CAM: "pytorch-grad-cam"}
_SIGN_FROM_WIRE: dict[int, Sign] = {
    pb.HEATMAP_SIGN_UNSPECIFIED: "all",
    pb.HEATMAP_SIGN_ALL: "all",
    pb.HEATMAP_SIGN_POSITIVE: "positive",
    pb.HEATMAP_SIGN_NEGATIVE: "negative",
    pb.HEATMAP_SIGN_ABSOLUTE: "absolute",
}


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):
    def __init__(self, core: Explainer) -> None:
        self.core = core

    def Explain(self, request: pb.ExplainRequest, context: Any) -> pb.ExplainResponse:
        # The call's deadline and cancellation reach the queue, which stops the work.
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        return encode_explanation(
            self.core.explain(decode_call(request), deadline, context.add_callback)
        )

    def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        repo = self.core.repository
        return pb.ListModelsResponse(
            models=[encode_model(repo.entry(n), repo.reload_error(n)) for n in repo.names()]
        )

    def GetModel(self, request: pb.GetModelRequest, context: Any) -> pb.GetModelResponse:
        repo = self.core.repository
        entry = repo.entry(request.name)
        return pb.GetModelResponse(model=encode_model(entry, repo.reload_error(request.name)))


def decode_call(request: pb.ExplainRequest) -> ExplainCall:
    kind = request.WhichOneof("input")
    data = request.image if kind == "image" else to_array(request.tensor)
    return ExplainCall(
        model=request.model,
        input=data,
        method=decode_method(request.method),
        targets=list(request.targets),
        heatmap=request.heatmap,
        heatmap_options=decode_heatmap_options(request),
        top_k=request.top_k,
        target_names=list(request.target_names),
        options=decode_options(request),
    )


def decode_options(request: pb.ExplainRequest) -> MethodOptions:
    """The newer methods' fields; unset ones stay None, so the method's defaults apply.
    An enum number this server does not know passes through as text, for the core to refuse."""
    baseline, baseline_tensor = None, None
    kind = request.baseline.WhichOneof("kind") if request.HasField("baseline") else None
    if kind == "zeros":
        baseline = "zeros"
    elif kind == "constant":
        baseline = f"constant:{request.baseline.constant!r}"
    elif kind == "blur_sigma":
        baseline = f"blur:{request.baseline.blur_sigma!r}"
    elif kind == "tensor":
        baseline_tensor = to_array(request.baseline.tensor)
    integration = request.integration
    cam_style = request.cam_style
    return MethodOptions(
        layer=request.layer,
        cam_style=_CAM_STYLES.get(cam_style, str(cam_style)) if cam_style else None,
        gradient=decode_method(request.gradient),
        steps=request.steps if request.HasField("steps") else None,
        integration=_INTEGRATIONS.get(integration, str(integration)) if integration else None,
        baseline=baseline,
        baseline_tensor=baseline_tensor,
        samples=request.samples if request.HasField("samples") else None,
        sigma=request.sigma if request.HasField("sigma") else None,
        seed=request.seed if request.HasField("seed") else None,
        noise=to_array(request.noise) if request.HasField("noise") else None,
    )


def decode_heatmap_options(request: pb.ExplainRequest) -> HeatmapOptions:
    if request.heatmap_sign not in _SIGN_FROM_WIRE:
        raise InvalidInput(f"unknown heatmap_sign {request.heatmap_sign}")
    try:
        return HeatmapOptions(
            sign=_SIGN_FROM_WIRE[request.heatmap_sign],
            opacity=request.heatmap_opacity if request.HasField("heatmap_opacity") else 0.5,
            colormap=request.heatmap_colormap or None,
            percentile=(
                request.heatmap_percentile if request.HasField("heatmap_percentile") else None
            ),
            overlay=request.heatmap_overlay if request.HasField("heatmap_overlay") else True,
        )
    except ValueError as exc:  # the options' own check, worded for the user
        raise InvalidInput(f"heatmap: {exc}") from None


def decode_method(wire: pb.Method) -> str | None:
    """None for METHOD_UNSPECIFIED; an unknown number passes through as text for the core."""
    if wire == pb.METHOD_UNSPECIFIED:
        return None
    return _METHOD_FROM_WIRE.get(wire, str(wire))


def encode_explanation(result: Explanation) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        saliency=to_tensor(result.saliency),
        scores=to_tensor(result.scores),
        targets=result.targets.tolist(),
        heatmap_png=result.heatmap_png or b"",
        target_labels=result.labels,
        method=_METHOD_TO_WIRE[result.method],
        completeness_gap=[]
        if result.completeness_gap is None
        else result.completeness_gap.tolist(),
        seed=result.seed,
        layer=result.layer,
        heatmaps_png=result.heatmaps_png,
        samples=result.samples.tolist(),
        target_scores=result.target_scores.tolist(),
        target_probabilities=result.probabilities.tolist(),
    )


def encode_model(entry: LoadedModel | FailedModel, reload_error: str | None = None) -> pb.ModelInfo:
    """A model's description; `reload_error`: why its newer files failed to load."""
    if isinstance(entry, FailedModel):
        return pb.ModelInfo(name=entry.name, available=False, error=entry.error)
    config = entry.config
    info = pb.ModelInfo(
        name=entry.name,
        available=True,
        reload_error=reload_error or "",
        input=encode_spec(entry.input),
        output=encode_spec(entry.output),
        labels=list(config.labels),
        methods=[_METHOD_TO_WIRE[m] for m in ALL_METHODS],
        default_method=_METHOD_TO_WIRE[config.default_method],
        method_info=[encode_method(m) for m in ALL_METHODS],
        default_layer=entry.default_layer() or "",
    )
    pre = config.preprocessing
    if pre is not None:
        info.preprocessing.CopyFrom(
            pb.Preprocessing(
                height=pre.height,
                width=pre.width,
                mean=pre.mean,
                std=pre.std,
                layout=pre.layout,
                color_mode=pre.color_mode,
            )
        )
    if entry.sanity is not None:
        encode_sanity(info, entry.sanity)
    return info


def encode_sanity(info: pb.ModelInfo, report: SanityReport) -> None:
    info.sanity_metric = report.metric
    info.sanity_max_similarity = report.max_similarity
    info.sanity_score = report.score
    for result in report.methods:
        wire = _METHOD_TO_WIRE.get(result.method)
        if wire is not None:  # a method this server does not serve has nothing to warn of
            scores = summarise(result.steps, report.score)
            info.sanity.add(method=wire, passed=result.passed, **scores)


def encode_spec(spec: Spec) -> pb.TensorSpec:
    shape = [-1 if d is None else d for d in spec.shape]
    return pb.TensorSpec(name=spec.name, dtype=dtype_code(spec.dtype), shape=shape)


def encode_method(name: str) -> pb.MethodInfo:
    return pb.MethodInfo(
        method=_METHOD_TO_WIRE[name],
        name=name,
        summary=REGISTRY[name].summary,
        parameters=[
            pb.MethodParameter(
                name=p, type=kind, default_value=default, description=text, choices=choices
            )
            for p, kind, default, text, choices in parameters(name)
        ],
    )
