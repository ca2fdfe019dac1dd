"""The Open Inference Protocol's tensor data types (FP32, INT64, ...) and numpy's, and its
tensors as arrays: from raw little-endian bytes or from a list of values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...core.errors import InvalidInput

_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_NAMES = {dtype.newbyteorder("="): name for name, dtype in _NUMPY.items()}
# More dimensions than any model takes; keeps numpy's size arithmetic sane.
MAX_RANK = 32
# Far above any request the server accepts: refuses a shape whose size would overflow.
_MAX_ELEMENTS = 1 << 40


def numpy_dtype(datatype: str, what: str) -> np.dtype:
    """The numpy dtype (little-endian) of a data type; InvalidInput for one not served."""
    try:
        return _NUMPY[datatype]
    except KeyError:
        served = ", ".join(_NUMPY)
        raise InvalidInput(f"{what} is {datatype!r}; this server takes {served}") from None


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name of a numpy dtype (FP32 for float32, ...)."""
    name = _NAMES.get(np.dtype(dtype).newbyteorder("="))
    if name is None:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol data type")
    return name


def check_shape(shape: list[int], what: str) -> tuple[int, ...]:
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"{what} has {len(shape)} dimensions; at most {MAX_RANK} are taken")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{what} has shape {shape}: a dimension is negative")
    if math.prod(shape) > _MAX_ELEMENTS:
        raise InvalidInput(f"{what} has shape {shape}: far too many elements")
    return tuple(int(d) for d in shape)


def from_raw(raw: bytes, datatype: str, shape: list[int], what: str) -> np.ndarray:
    """An array from the protocol's raw form: flat, row-major, little-endian bytes."""
    dtype = numpy_dtype(datatype, what)
    dims = check_shape(shape, what)
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{what} has {len(raw)} bytes of data; {datatype} of shape {list(dims)} is {expected}"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def from_values(values: Any, datatype: str, shape: list[int], what: str) -> np.ndarray:
    """An array from a list of values, flat or nested, as long as the shape says."""
    dtype = numpy_dtype(datatype, what)
    dims = check_shape(shape, what)
    try:
        flat = np.asarray(values, dtype=object).reshape(-1)
    except ValueError:  # a ragged nesting
        raise InvalidInput(f"{what}: the data is not a rectangular list of values") from None
    if flat.size != math.prod(dims):
        raise InvalidInput(
            f"{what} has {flat.size} values; shape {list(dims)} holds {math.prod(dims)}"
        )
    if not all(isinstance(v, (int, float, np.number, np.bool_)) for v in flat):
        raise InvalidInput(f"{what}: {datatype} data must be numbers")
    if datatype == "BOOL":
        if not all(isinstance(v, (bool, np.bool_)) for v in flat):
            raise InvalidInput(f"{what}: BOOL data must be true or false")
    elif dtype.kind in "iu" and not all(_whole(v) for v in flat):
        raise InvalidInput(f"{what}: {datatype} data must be whole numbers")
    try:
        array = np.array(flat.tolist(), dtype=dtype.newbyteorder("="))
    except (OverflowError, ValueError, TypeError):
        raise InvalidInput(f"{what}: a value does not fit {datatype}") from None
    return array.reshape(dims)


def _whole(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer)) or float(value).is_integer()


def to_raw(array: np.ndarray) -> bytes:
    """The protocol's raw form of an array."""
    dtype = _NUMPY[datatype_of(array.dtype)]
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
