"""Float arrays back from snapshot JSON: orjson writes NaN as ``null``, so it comes back as None.

>>> floats([1.0, None]).tolist()
[1.0, nan]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def floats(values: Any) -> npt.NDArray[np.float64]:
    """``values`` (nested lists, None for NaN) as a float array of the same shape."""
    arr = np.asarray(values, dtype=object)
    out: npt.NDArray[np.float64] = np.where(arr == None, np.nan, arr).astype(np.float64)  # noqa: E711
    return out


__all__ = ["floats"]
