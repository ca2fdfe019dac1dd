"""The Open Inference Protocol's tensor data types (FP32, INT64, ...) and numpy's, and its
tensors as arrays: from raw little-endian bytes or from a list of values.

BYTES tensors (the protocol's variable-length elements) become numpy object arrays of
`bytes`: in raw form each element is a 4-byte little-endian length and then that many
bytes; as values (gRPC's bytes_contents) each is bytes, and in JSON, which cannot carry
arbitrary bytes, each is a base64 string. The server takes them as encoded images.
"""

from __future__ import annotations

import base64
import binascii
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
BYTES = "BYTES"
_NAMES = {dtype.newbyteorder("="): name for name, dtype in _NUMPY.items()}
# More dimensions than any model takes; keeps numpy's size arithmetic sane.
MAX_RANK = 32
# Far above any request the server accepts: refuses a shape whose size would overflow.
_MAX_ELEMENTS = 1 << 40


def numpy_dtype(datatype: str, what: str) -> np.dtype:
    """The numpy dtype (little-endian) of a numeric data type; InvalidInput for one not
    served (BYTES has none: see from_raw and from_values)."""
    try:
        return _NUMPY[datatype]
    except KeyError:
        served = ", ".join([*_NUMPY, BYTES])
        raise InvalidInput(f"{what} is {datatype!r}; this server takes {served}") from None


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name of a numpy dtype (FP32 for float32, ...; BYTES for object)."""
    if np.dtype(dtype) == np.dtype(object):
        return BYTES
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
    if datatype == BYTES:
        return _bytes_from_raw(raw, check_shape(shape, what), what)
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
    if datatype == BYTES:
        return _bytes_from_values(values, check_shape(shape, what), what)
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


def _bytes_from_raw(raw: bytes, dims: tuple[int, ...], what: str) -> np.ndarray:
    """BYTES elements from their raw form: each a 4-byte little-endian length, then data."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"{what}: BYTES data ends inside an element's 4-byte length")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(raw):
            raise InvalidInput(
                f"{what}: a BYTES element says {size} bytes; {len(raw) - offset} are left"
            )
        elements.append(raw[offset : offset + size])
        offset += size
    return _object_array(elements, dims, what)


def _bytes_from_values(values: Any, dims: tuple[int, ...], what: str) -> np.ndarray:
    """BYTES elements given as bytes (gRPC) or base64 strings (JSON)."""
    flat = values if isinstance(values, list) else [values]
    while any(isinstance(v, list) for v in flat):  # a nested list, row-major
        flat = [w for v in flat for w in (v if isinstance(v, list) else [v])]
    elements = []
    for value in flat:
        if isinstance(value, bytes):
            elements.append(value)
        elif isinstance(value, str):
            try:
                elements.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                raise InvalidInput(
                    f"{what}: a BYTES element in JSON must be base64; this one is not"
                ) from None
        else:
            raise InvalidInput(f"{what}: BYTES data must be base64 strings (JSON) or bytes")
    return _object_array(elements, dims, what)


def _object_array(elements: list[bytes], dims: tuple[int, ...], what: str) -> np.ndarray:
    if len(elements) != math.prod(dims):
        raise InvalidInput(
            f"{what} has {len(elements)} BYTES elements; shape {list(dims)} holds {math.prod(dims)}"
        )
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array.reshape(dims)


def _whole(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer)) or float(value).is_integer()


def to_raw(array: np.ndarray) -> bytes:
    """The protocol's raw form of an array."""
    dtype = _NUMPY[datatype_of(array.dtype)]
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
