"""Large models handed to a runtime as a file whose weights sit in a file beside it.

onnxruntime and OpenVINO given a model's bytes hold three or four copies of its weights
while they load it (the bytes, the parsed proto, their own tensors, OpenVINO's compiled
blobs); given a path to a model with external data, one or two. For the light zoo's
VGG-19 explain model (1.07 GB) that is +1.5 GB instead of +3.2 GB for an onnxruntime
session and +2.2 GB instead of +4.3 GB for an OpenVINO compile (measured), and both
load several times faster. The runtimes compute the same bits either way.

The files are written without copying the model first: the proto is rebuilt around
references to the weights file, one weight read out at a time, and the caller's model
is left as it was.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

# Models at least this large go through a file; smaller ones load from bytes (no disk).
BY_FILE_BYTES = 64 * 2**20
# Weights smaller than this stay in the .onnx file; larger ones start on a page boundary
# in the weights file, so that a runtime may map them straight from it.
INLINE_BYTES = 4096
ALIGN = 4096
WEIGHTS = "weights.bin"


def _copy_fields(
    source: onnx.ModelProto | onnx.GraphProto,
    target: onnx.ModelProto | onnx.GraphProto,
    skip: str,
) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field (of messages or of scalars)
            getattr(target, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _raw(tensor: onnx.TensorProto) -> bytes:
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    array = numpy_helper.to_array(tensor)  # ONNX's raw data is little-endian
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def save_with_external_weights(model: onnx.ModelProto, path: Path) -> None:
    """Writes `model` to `path`, its weights to WEIGHTS beside it; `model` is not changed."""
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    _copy_fields(model.graph, skeleton.graph, skip="initializer")
    with open(path.parent / WEIGHTS, "wb") as weights:
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise ValueError(f"{tensor.name}: its data is external already")
            if tensor.data_type == onnx.TensorProto.STRING or tensor.ByteSize() < INLINE_BYTES:
                skeleton.graph.initializer.add().CopyFrom(tensor)
                continue
            offset = -weights.tell() % ALIGN + weights.tell()
            weights.write(b"\0" * (offset - weights.tell()))
            data = _raw(tensor)
            weights.write(data)
            ref = skeleton.graph.initializer.add()
            ref.name, ref.data_type = tensor.name, tensor.data_type
            ref.dims.extend(tensor.dims)
            ref.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", WEIGHTS), ("offset", offset), ("length", len(data))):
                entry = ref.external_data.add()
                entry.key, entry.value = key, str(value)
            del data  # one weight in memory at a time
    path.write_bytes(skeleton.SerializeToString())


@contextlib.contextmanager
def loadable(model: onnx.ModelProto) -> Iterator[str | bytes]:
    """What to hand a runtime for `model`: its bytes, or (large) the path of a copy on disk
    with external weights, deleted on exit (a runtime that mapped the weights keeps them)."""
    if model.ByteSize() < BY_FILE_BYTES:
        yield model.SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix="onnxplain-test-model-") as folder:
        path = Path(folder) / "model.onnx"
        save_with_external_weights(model, path)
        yield str(path)
