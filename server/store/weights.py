"""One copy of a model's weights per process, shared by every onnxruntime session of it.

Each session built from a serialized model holds its own copy of every initializer (and
each method's explain model repeats the forward weights), so a server of a 548 MB VGG-19
held 6.3 GB after one explanation per method. onnxruntime lets a session take an
initializer from memory the caller owns (`SessionOptions.add_initializer`): the session then
reads that buffer and copies nothing. A `WeightStore` keeps one such buffer per distinct
tensor, found by content, so the forward pass and every method's explain model (which share
the forward weights, and whose backward convolutions share their flipped copies) read one
copy. Measured alternatives are in docs/service.md (Serving under load).

The serialized model still carries the data while onnxruntime parses it (onnxruntime refuses
an initializer whose bytes are elsewhere unless it copies them, as `add_external_initializers`
does); that copy lives only while the session is being created.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

# Smaller tensors (shapes, scalars) are not worth a lookup: onnxruntime may constant-fold
# them anyway.
MIN_SHARED_BYTES = 4096


class WeightStore:
    """Initializer values by content, as OrtValues that sessions read in place."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[int, ...], bytes], tuple[np.ndarray, ort.OrtValue]] = {}
        self._lock = threading.Lock()

    def share(self, model: onnx.ModelProto, options: ort.SessionOptions) -> None:
        """Adds each large initializer of `model` to `options` from this store's copy."""
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                continue  # read from its file by onnxruntime; the server loads no such models
            array = numpy_helper.to_array(tensor)
            if array.nbytes < MIN_SHARED_BYTES:
                continue
            options.add_initializer(tensor.name, self._value(array))

    def _value(self, array: np.ndarray) -> ort.OrtValue:
        digest = hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=20).digest()
        key = (array.dtype.str, tuple(array.shape), digest)
        with self._lock:
            if key not in self._values:
                held = np.ascontiguousarray(array)
                if not held.flags.writeable:  # a view of protobuf's bytes
                    held = held.copy()
                # ortvalue_from_numpy wraps the array's buffer: the array must outlive it.
                self._values[key] = (held, ort.OrtValue.ortvalue_from_numpy(held))
            return self._values[key][1]

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(held.nbytes for held, _ in self._values.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
