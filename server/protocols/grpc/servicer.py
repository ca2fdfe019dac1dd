"""The gRPC servicer: decode the request, call the core, encode the answer. Nothing else.

Errors are not handled here: the core's exceptions propagate to `app.error_mapping`.
"""

from __future__ import annotations

import time
from typing import Any

from onnxplain.graph_rewrite.methods import GRAPH, REGISTRY, method_names
from onnxplain.render import HeatmapOptions, Sign
from onnxplain.sanity import SanityReport, summarise

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1 import explain_pb2_grpc
from onnxplain.v1.tensors import dtype_code, to_array, to_tensor

from ...core.errors import InvalidInput
from ...core.explainer import ExplainCall, Explainer, Explanation
from ...store.repository import FailedModel, LoadedModel, Spec
from .aliases import method_to_wire, request_method, request_params, set_outputs
from .seed_targets import decode_output_grad, decode_target, encode_detection

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
        method=request_method(request),
        targets=list(request.targets),
        heatmap=request.heatmap,
        heatmap_options=decode_heatmap_options(request),
        top_k=request.top_k,
        target_names=list(request.target_names),
        params=request_params(request),
        output_grad=decode_output_grad(request),
        target=decode_target(request),
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


def encode_explanation(result: Explanation) -> pb.ExplainResponse:
    response = pb.ExplainResponse(
        saliency=to_tensor(result.saliency),
        scores=to_tensor(result.scores),
        targets=result.targets.tolist(),
        heatmap_png=result.heatmap_png or b"",
        target_labels=result.labels,
        method=method_to_wire(result.method),
        method_name=result.method,
        heatmaps_png=result.heatmaps_png,
        samples=result.samples.tolist(),
        target_scores=result.target_scores.tolist(),
        target_probabilities=result.probabilities.tolist(),
        detections=[encode_detection(d) for d in result.detections],
    )
    set_outputs(response, result.outputs)
    return response


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
        # The enum lists only methods that have a value; method_info lists every one.
        methods=[w for w in map(method_to_wire, method_names()) if w != pb.METHOD_UNSPECIFIED],
        default_method=method_to_wire(config.default_method),
        default_method_name=config.default_method,
        method_info=[encode_method(m) for m in method_names()],
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
        if result.method in REGISTRY:  # a method this server does not serve: nothing to warn of
            scores = summarise(result.steps, report.score)
            info.sanity.add(
                method=method_to_wire(result.method),
                method_name=result.method,
                passed=result.passed,
                **scores,
            )


def encode_spec(spec: Spec) -> pb.TensorSpec:
    shape = [-1 if d is None else d for d in spec.shape]
    return pb.TensorSpec(name=spec.name, dtype=dtype_code(spec.dtype), shape=shape)


def encode_method(name: str) -> pb.MethodInfo:
    """A method as the registry describes it: its parameters and outputs."""
    spec = REGISTRY[name]
    return pb.MethodInfo(
        method=method_to_wire(name),
        name=name,
        summary=spec.summary,
        parameters=[
            pb.MethodParameter(
                name=p.name,
                type=p.wire_type,
                default_value="" if p.default is None else str(p.default),
                description=p.description,
                choices=[str(c) for c in p.choices or ()],
                kind=pb.PARAMETER_KIND_GRAPH if p.kind == GRAPH else pb.PARAMETER_KIND_RUN_TIME,
            )
            for p in spec.params
        ],
        outputs=[
            pb.MethodOutput(
                name=o.name,
                type=o.wire_type,
                description=o.description,
            )
            for o in spec.outputs
        ],
    )
