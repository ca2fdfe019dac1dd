"""numpy arrays to and from the wire's `Tensor`: raw little-endian, row-major bytes."""

from __future__ import annotations

import math

import numpy as np

from .explain_pb2 import DataType, Tensor

_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    DataType.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    DataType.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    DataType.DATA_TYPE_UINT8: np.dtype("u1"),
    DataType.DATA_TYPE_INT8: np.dtype("i1"),
    DataType.DATA_TYPE_UINT16: np.dtype("<u2"),
    DataType.DATA_TYPE_INT16: np.dtype("<i2"),
    DataType.DATA_TYPE_INT32: np.dtype("<i4"),
    DataType.DATA_TYPE_INT64: np.dtype("<i8"),
    DataType.DATA_TYPE_UINT32: np.dtype("<u4"),
    DataType.DATA_TYPE_UINT64: np.dtype("<u8"),
    DataType.DATA_TYPE_BOOL: np.dtype("?"),
}
_FROM_NUMPY = {
    dt.newbyteorder("=") if dt.byteorder != "|" else dt: code for code, dt in _TO_NUMPY.items()
}


# numpy 1.x's own rank limit (numpy 2 allows 64); no model input comes anywhere near it.
MAX_RANK = 32
# Far above any message the server accepts; it only keeps numpy's own size arithmetic
# from overflowing on a shape like [0, 2**62, 2**62] that holds no bytes at all.
_MAX_SPAN_BYTES = 1 << 48


class TensorError(ValueError):
    """A Tensor message that does not describe a valid array; the message says why."""


def dtype_code(dtype: np.dtype) -> DataType:
    """The DataType of a numpy dtype; DATA_TYPE_UNSPECIFIED where the wire has none."""
    return _FROM_NUMPY.get(np.dtype(dtype).newbyteorder("="), DataType.DATA_TYPE_UNSPECIFIED)


def dtype_name(code: int) -> str:
    """A DataType's enum name for messages, e.g. DATA_TYPE_FLOAT32."""
    try:
        return DataType.Name(code)
    except ValueError:
        return f"data type {code}"


def to_tensor(array: np.ndarray) -> Tensor:
    code = dtype_code(array.dtype)
    if code == DataType.DATA_TYPE_UNSPECIFIED:
        raise TensorError(f"numpy dtype {array.dtype} has no wire data type")
    wire = np.ascontiguousarray(array, dtype=_TO_NUMPY[code])
    return Tensor(dtype=code, shape=list(array.shape), data=wire.tobytes())


def to_array(tensor: Tensor) -> np.ndarray:
    """The array a Tensor describes, in native byte order; TensorError where it is malformed."""
    wire = _TO_NUMPY.get(tensor.dtype)
    if wire is None:
        raise TensorError(f"tensor dtype {dtype_name(tensor.dtype)} is not supported")
    if len(tensor.shape) > MAX_RANK:
        raise TensorError(
            f"tensor has {len(tensor.shape)} dimensions; at most {MAX_RANK} are supported"
        )
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"tensor shape {list(shape)} has a negative dimension")
    if math.prod(d for d in shape if d) * wire.itemsize > _MAX_SPAN_BYTES:
        raise TensorError(f"tensor shape {list(shape)} is absurdly large")
    expected = int(np.prod(shape, dtype=object)) * wire.itemsize
    if len(tensor.data) != expected:
        raise TensorError(
            f"tensor data has {len(tensor.data)} bytes; shape {list(shape)} of "
            f"{dtype_name(tensor.dtype)} needs {expected}"
        )
    return np.frombuffer(tensor.data, dtype=wire).reshape(shape).astype(wire.newbyteorder("="))
