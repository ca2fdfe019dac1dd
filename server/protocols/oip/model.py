"""Each served model as an Open Inference Protocol model, whatever the transport.

ModelInfer runs the explain model: the inputs are the model's own (plus, optionally, an
INT64 `targets` input, one class per sample, -1 for the sample's top class, and the
tensor-valued method options), the request parameters name the method, its parameters,
`target` (one class for every sample) and `top_k` (each sample's k best classes, one row
each), and the outputs are the model's scores plus `saliency` and `explained_targets`,
`explained_samples` (the sample of each row) under top_k, and whatever per-row arrays the
method adds (Integrated Gradients' completeness gap). For a model with image preprocessing
the model's input may instead be BYTES of shape [N], one encoded PNG or JPEG per sample,
decoded with the Explain RPC's limits (core/imaging.py). Both transports (grpc_servicer.py,
rest.py) decode their wire format into this module's arrays and encode what it returns.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnxplain.graph_rewrite import TARGETS_INPUT, TARGETS_OUTPUT
from onnxplain.graph_rewrite.methods import ALL_METHODS

from ...core.batching import OnAbandon
from ...core.errors import InvalidInput, ModelNotFound
from ...core.explainer import ExplainCall, Explainer, Explanation
from ...core.imaging import preprocess
from ...store.repository import FailedModel, LoadedModel
from ..method_parameters import method_request, tensor_parameters
from .datatypes import datatype_of

SERVER_NAME = "onnxplain"
VERSION = "1"  # every model has one version: the files it was last (re)loaded from
PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by onnxruntime
SALIENCY_OUTPUT = "saliency"
TARGET_PARAMETER = "target"  # one class for every sample
TOP_K_PARAMETER = "top_k"  # each sample's k best classes, as the Explain RPC's top_k
SAMPLES_OUTPUT = "explained_samples"  # under top_k: the sample each row explains
# Parameters that clients (tritonclient) may send about the transport or scheduling, not
# about the explanation: ignored, so that those clients work unchanged.
TRANSPORT_PARAMETERS = frozenset(
    ("binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
     "timeout", "headers")
)  # fmt: skip
TRANSPORT_PREFIX = "triton_"


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]  # -1: any size


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InferResult:
    model_name: str
    outputs: list[tuple[str, np.ndarray]]  # in the order they are sent
    parameters: dict[str, Any]  # the method and its scalar extras (seed, layer)
    method: str


def server_version() -> str:
    try:
        return importlib.metadata.version("onnxplain")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def server_ready(core: Explainer) -> bool:
    """Ready when some model is loaded and can explain."""
    return core.repository.ready()


def model_ready(core: Explainer, name: str, version: str) -> bool:
    """Whether `name` loaded; ModelNotFound for a name (or version) the server lacks."""
    entry = _entry(core, name, version)
    return not isinstance(entry, FailedModel)


def loaded(core: Explainer, name: str, version: str) -> LoadedModel:
    """The model to run: ModelNotFound for a name or version the server lacks,
    ModelUnavailable for one that failed to load."""
    return core.repository.get(_entry(core, name, version).name)


def model_metadata(core: Explainer, name: str, version: str) -> ModelMetadata:
    model = loaded(core, name, version)
    inputs, output = model.input, model.output
    sample = [-1 if d is None else d for d in inputs.shape[1:]]
    return ModelMetadata(
        name=model.name,
        versions=[VERSION],
        platform=PLATFORM,
        inputs=[TensorMetadata(inputs.name, datatype_of(inputs.dtype), _dims(inputs.shape))],
        outputs=[
            TensorMetadata(output.name, datatype_of(output.dtype), _dims(output.shape)),
            TensorMetadata(SALIENCY_OUTPUT, datatype_of(inputs.dtype), [-1, *sample]),
            TensorMetadata(TARGETS_OUTPUT, "INT64", [-1]),
        ],
        properties=_properties(model),
    )


def infer(
    core: Explainer,
    name: str,
    version: str,
    inputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any],
    wanted: Sequence[str] = (),
    deadline: float | None = None,
    on_abandon: OnAbandon | None = None,
) -> InferResult:
    """Explain `inputs` with `name`; `wanted`: the outputs to return (empty: all)."""
    model = loaded(core, name, version)
    x = _model_input(model, inputs, core.max_batch)
    named = tensor_parameters()
    tensors = {k: v for k, v in inputs.items() if k in named and k != model.input.name}
    given = {
        k: v
        for k, v in parameters.items()
        if k not in TRANSPORT_PARAMETERS and not k.startswith(TRANSPORT_PREFIX)
    }
    targets = _targets(given.pop(TARGET_PARAMETER, None), inputs, model)
    top_k = _top_k(given.pop(TOP_K_PARAMETER, 0))
    method, params = method_request(given, tensors)
    result = core.explain(
        ExplainCall(
            model=model.name,
            input=x,
            method=method,
            targets=targets,
            top_class_targets=True,
            top_k=top_k,
            params=params,
        ),
        deadline,
        on_abandon,
    )
    outputs = _outputs(model, result, top_k > 0)
    if wanted:
        available = dict(outputs)
        missing = [w for w in wanted if w not in available]
        if missing:
            raise InvalidInput(
                f"no output named {missing[0]!r} for method {result.method}; outputs: "
                f"{', '.join(available)}"
            )
        outputs = [(w, available[w]) for w in dict.fromkeys(wanted)]
    return InferResult(model.name, outputs, _extras(result), result.method)


def _entry(core: Explainer, name: str, version: str) -> LoadedModel | FailedModel:
    entry = core.repository.entry(name)  # ModelNotFound
    if version not in ("", VERSION):
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it has {VERSION!r}")
    return entry


def _dims(shape: Sequence[int | None]) -> list[int]:
    return [-1 if d is None else d for d in shape]


def _properties(model: LoadedModel) -> dict[str, str]:
    """What a client needs beyond the tensors, as text (the protocol's free-form map)."""
    return {
        "default_method": model.config.default_method,
        "methods": ",".join(ALL_METHODS),
        "optional_inputs": ",".join([TARGETS_INPUT, *tensor_parameters()]),
        "labels": ",".join(model.config.labels),
        # Whether the model's input may be BYTES, one encoded PNG or JPEG per sample.
        "image_input": "true" if model.config.preprocessing is not None else "false",
    }


def _model_input(
    model: LoadedModel, inputs: Mapping[str, np.ndarray], max_batch: int
) -> np.ndarray:
    spec = model.input
    takes = [spec.name, TARGETS_INPUT, *tensor_parameters()]
    stray = [n for n in inputs if n not in takes]
    if stray:
        raise InvalidInput(
            f"model {model.name!r} has no input {stray[0]!r}; inputs: {spec.name} "
            f"({datatype_of(spec.dtype)} {_dims(spec.shape)}), and optionally "
            f"{', '.join(takes[1:])}"
        )
    if spec.name not in inputs:
        raise InvalidInput(f"model {model.name!r} needs its input {spec.name!r}")
    x = inputs[spec.name]
    if x.dtype == np.dtype(object):
        return _images(model, x, max_batch)
    if x.dtype != spec.dtype:
        raise InvalidInput(
            f"input {spec.name!r} is {datatype_of(x.dtype)}; model {model.name!r} takes "
            f"{datatype_of(spec.dtype)}"
        )
    return x


def _images(model: LoadedModel, images: np.ndarray, max_batch: int) -> np.ndarray:
    """A BYTES input, one encoded image per sample, as one batch of the model's input.

    Each image goes through the Explain RPC's decoder and limits (PNG or JPEG, at most
    the server's megapixels) and the model's preprocessing; the count is checked first,
    so that no more than a batch of images is ever decoded."""
    pre = model.config.preprocessing
    if pre is None:
        raise InvalidInput(
            f"model {model.name!r} has no image preprocessing configured: send its input "
            f"{model.input.name!r} as a {datatype_of(model.input.dtype)} tensor, not BYTES"
        )
    if images.ndim != 1 or not 1 <= len(images) <= max_batch:
        raise InvalidInput(
            f"BYTES input {model.input.name!r} has shape {list(images.shape)}; it must be "
            f"[N], one PNG or JPEG per sample, with 1 <= N <= {max_batch}"
        )
    return np.concatenate([preprocess(bytes(image), pre) for image in images])


def _top_k(value: Any) -> int:
    """The `top_k` parameter; its range (1..20, at most the classes) is the core's check."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"parameter {TOP_K_PARAMETER!r} must be a whole number; got {value!r}")
    return value


def _targets(target: Any, inputs: Mapping[str, np.ndarray], model: LoadedModel) -> list[int]:
    """The targets asked for: the `target` parameter, or the `targets` input; -1 (and
    none at all) is the sample's top class."""
    given = inputs.get(TARGETS_INPUT) if model.input.name != TARGETS_INPUT else None
    if target is not None and given is not None:
        raise InvalidInput(f"give the {TARGET_PARAMETER!r} parameter or a targets input, not both")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, int):
            raise InvalidInput(f"parameter {TARGET_PARAMETER!r} must be a class; got {target!r}")
        return [target]
    if given is None:
        return []
    if given.dtype.kind not in "iu" or given.ndim != 1:
        raise InvalidInput(
            f"input {TARGETS_INPUT!r} must be INT64 of shape [N], one class per sample; got "
            f"{datatype_of(given.dtype)} {list(given.shape)}"
        )
    return [int(t) for t in given]


def _outputs(model: LoadedModel, result: Explanation, top_k: bool) -> list[tuple[str, np.ndarray]]:
    outputs = [
        (model.output.name, result.scores),
        (SALIENCY_OUTPUT, result.saliency),
        (TARGETS_OUTPUT, result.targets.astype(np.int64)),
    ]
    if top_k:  # rows are no longer one per sample: say which each is
        outputs.append((SAMPLES_OUTPUT, result.samples.astype(np.int64)))
    for name, value in result.outputs.items():
        if isinstance(value, np.ndarray):
            outputs.append((name, value))  # a method's own per-row values
    return outputs


def _extras(result: Explanation) -> dict[str, Any]:
    """The response's parameters: the method run, and its scalar extras that are set."""
    extras: dict[str, Any] = {"method": result.method}
    for name, value in result.outputs.items():
        if isinstance(value, (int, str)) and value not in ("", None):
            extras[name] = value
    return extras
