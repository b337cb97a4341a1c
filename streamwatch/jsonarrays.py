"""Float arrays in snapshot JSON, and back.

orjson writes NaN as ``null``, so a list of numbers comes back with None for NaN. Large arrays
are written :func:`packed` instead: base64 of their little-endian doubles, which orjson copies
about ten times faster than it formats the numbers (the label store's scores were a third of a
model snapshot's time), bit for bit, NaN included.

>>> floats([1.0, None]).tolist()
[1.0, nan]
>>> a = np.full((100, 2), 0.1)
>>> a[7, 1] = np.nan
>>> doc = orjson.loads(orjson.dumps(packed(a)))
>>> doc["shape"], np.array_equal(floats(doc), a, equal_nan=True)
([100, 2], True)
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson  # noqa: F401  (the doctest's)

# below this many values the JSON numbers are as quick and stay readable
PACK_ABOVE = 64


def packed(values: npt.NDArray[np.float64] | None) -> Any:
    """``values`` for a snapshot: a ``{"f8": base64, "shape": [...]}`` object when large,
    else the array itself (orjson writes it as numbers), or None."""
    if values is None or values.size <= PACK_ABOVE:
        return values
    a = np.ascontiguousarray(values, dtype="<f8")
    return {"f8": base64.b64encode(a.data).decode("ascii"), "shape": list(a.shape)}


def floats(values: Any) -> npt.NDArray[np.float64]:
    """``values`` (nested lists, None for NaN, or :func:`packed`) as a float array of the same
    shape."""
    if isinstance(values, dict):
        try:
            raw = base64.b64decode(values["f8"], validate=True)
            return np.frombuffer(raw, dtype="<f8").astype(np.float64).reshape(values["shape"])
        except (KeyError, TypeError, binascii.Error) as e:
            raise ValueError(f"not a packed float array: {e}") from None
    arr = np.asarray(values, dtype=object)
    out: npt.NDArray[np.float64] = np.where(arr == None, np.nan, arr).astype(np.float64)  # noqa: E711
    return out


__all__ = ["PACK_ABOVE", "floats", "packed"]
