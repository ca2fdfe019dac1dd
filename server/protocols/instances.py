"""JSON `instances` (KServe V1's and Vertex AI's request body) → explanations from the core.

Each instance is one sample: a nested list (the model's input without its batch
dimension; all such instances run as one batch), or `{"b64": "<PNG or JPEG>"}` for a
model with image preprocessing (one core call per image, so each is decoded with the
Explain RPC's limits). Shared by the protocols that take instances, so that they decode
alike and differ only in how they encode the answer.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from ..core.explainer import ExplainCall, Explainer, Explanation
from ..store.repository import LoadedModel


def explain_instances(
    core: Explainer, name: str, instances: list[Any], call: ExplainCall
) -> list[Explanation]:
    """The explanations of every instance: one batch of tensors, or one call per image.

    At most the server's batch of instances, images or not: a tensor batch is held to it
    by the core, and the images, each its own call, are counted here before any is
    decoded."""
    model = core.repository.get(name)
    if len(instances) > core.max_batch:
        raise InvalidInput(
            f"{len(instances)} instances; this server takes at most {core.max_batch} per request"
        )
    images = [_image(i) for i in instances]
    if all(i is not None for i in images):
        return [core.explain(dataclasses.replace(call, input=i)) for i in images if i is not None]
    if any(i is not None for i in images):
        raise InvalidInput("give every instance as a nested list, or every one as {'b64': ...}")
    batch = _tensor(instances, model)
    return [core.explain(dataclasses.replace(call, input=batch))]


def _image(instance: Any) -> bytes | None:
    if not isinstance(instance, dict):
        return None
    if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
        raise InvalidInput('an instance object must be {"b64": "<base64 PNG or JPEG>"}')
    try:
        return base64.b64decode(instance["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("an instance's b64 is not valid base64") from None


def _tensor(instances: list[Any], model: LoadedModel) -> np.ndarray:
    """The instances stacked into one batch of the model's input type."""
    spec = model.input
    try:
        batch = np.asarray(instances, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"the instances are not equal-shaped lists of numbers; model {model.name!r} takes "
            f"samples of shape {['?' if d is None else d for d in spec.shape[1:]]}"
        ) from None
    if np.issubdtype(spec.dtype, np.integer) and not (batch == np.round(batch)).all():
        raise InvalidInput(f"model {model.name!r} takes whole numbers ({spec.dtype})")
    return batch.astype(spec.dtype)
