"""The merge pass: several methods' explain models in one graph, the forward pass once.

Every gradient method's explain model repeats the same forward pass, and onnxruntime
derives its own blocked-layout copy of every conv weight per session (176 MB per session
for VGG-19). Merged into one graph, the forward nodes and any identical backward nodes and
weights appear once; each method keeps its own saliency output, and a run computes only
what its outputs need (`RunOptions.only_execute_path_to_fetches`).

A node of a later model is shared when the merged graph already holds a node with the same
outputs that is byte for byte the same once its inputs are renamed; anything else is copied
under a name prefixed with the method, so a merged graph computes exactly what each model
computed alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import onnx

from .backward import SALIENCY_OUTPUT


def merge_explain_models(
    models: Mapping[str, onnx.ModelProto], saliency_name: str = SALIENCY_OUTPUT
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The merged model (built on the first one, which is changed) and each method's
    saliency output name (each model's own is `saliency_name`)."""
    methods = list(models)
    merged = models[methods[0]]
    graph = merged.graph
    produced = {out: node for node in graph.node for out in node.output}
    inits = {t.name: t for t in graph.initializer}
    by_content = {_content_key(t): t.name for t in graph.initializer}
    saliency = {methods[0]: saliency_name}
    for method in methods[1:]:
        other = models[method].graph
        renamed: dict[str, str] = {}

        def fresh(name: str, method: str = method) -> str:
            return f"{method}::{name}"

        for tensor in other.initializer:
            kept = inits.get(tensor.name)
            if kept is not None and _same_tensor(kept, tensor):
                continue
            # The same weight under another name (each method's builder numbers its own
            # flipped copies): read the merged graph's, so onnxruntime derives it once.
            twin = by_content.get(_content_key(tensor))
            if twin is not None:
                renamed[tensor.name] = twin
                continue
            copy = graph.initializer.add()
            copy.CopyFrom(tensor)
            copy.name = renamed[tensor.name] = fresh(tensor.name)
            inits[copy.name] = copy
            by_content[_content_key(copy)] = copy.name
        for node in other.node:
            candidate = onnx.NodeProto()
            candidate.CopyFrom(node)
            for i, name in enumerate(candidate.input):
                if name in renamed:
                    candidate.input[i] = renamed[name]
            kept_node = produced.get(candidate.output[0]) if candidate.output else None
            if kept_node is not None and kept_node.SerializeToString() == (
                candidate.SerializeToString()
            ):
                continue
            for i, name in enumerate(candidate.output):
                if name:
                    candidate.output[i] = renamed[name] = fresh(name)
            candidate.name = fresh(candidate.name) if candidate.name else ""
            graph.node.append(candidate)
            for out in candidate.output:
                produced[out] = graph.node[-1]
        # The shapes declared for its gradients (gradient_shapes.py), under their new names.
        declared = {vi.name for vi in graph.value_info}
        for info in other.value_info:
            name = renamed.get(info.name, info.name)
            if name not in declared:
                added = graph.value_info.add()
                added.CopyFrom(info)
                added.name = name
                declared.add(name)
        for output in other.output:
            name = renamed.get(output.name, output.name)
            if name not in {o.name for o in graph.output}:
                info = graph.output.add()
                info.CopyFrom(output)
                info.name = name
        saliency[method] = renamed.get(saliency_name, saliency_name)
    return merged, saliency


def _content_key(tensor: onnx.TensorProto) -> tuple[int, tuple[int, ...], bytes]:
    data = tensor.raw_data if tensor.HasField("raw_data") else _without_name(tensor)
    return tensor.data_type, tuple(tensor.dims), hashlib.blake2b(data, digest_size=20).digest()


def _without_name(tensor: onnx.TensorProto) -> bytes:
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.ClearField("name")
    return copy.SerializeToString()


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    if a.data_type != b.data_type or list(a.dims) != list(b.dims):
        return False
    return a.SerializeToString() == b.SerializeToString()
