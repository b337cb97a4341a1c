"""The shared batch loop of detectors for 0/1 error streams (DDM, HDDM_A).

Both advance over a batch in chunks, vectorised within a chunk, until the first detection;
chunks start as long as the current segment and double while nothing fires, so a quiet stream
costs a few large numpy passes and a detection costs one chunk's worth of work.
"""

from __future__ import annotations

import abc

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.base import Detection, Detector, FloatArray, as_values

MIN_CHUNK = 256  # shortest chunk; chunks double while nothing fires
MAX_CHUNK = 1 << 16


class BinaryDetector(Detector):
    """Base of detectors fed 0/1 values (1 = error); subclasses implement ``_chunk``."""

    _n: int  # values in the current segment (since the last detection)

    @abc.abstractmethod
    def _chunk(self, x: FloatArray, pos: npt.NDArray[np.int64]) -> tuple[int, Detection] | None:
        """Advance over one chunk; stop at the first detection (returned with its chunk index)."""

    def update(self, values: npt.ArrayLike) -> list[Detection]:
        x = as_values(values)
        finite = np.isfinite(x)
        index = None if finite.all() else np.flatnonzero(finite)
        if index is not None:
            x = x[index]
        if ((x < 0.0) | (x > 1.0)).any():
            raise ValueError(f"{self.name} takes values in [0, 1] (1 = error)")
        first = self.n_seen
        self.n_seen += finite.size
        detections: list[Detection] = []
        i = 0
        size = max(MIN_CHUNK, self._n)
        while i < x.size:
            m = min(x.size - i, size, MAX_CHUNK)
            pos = first + (np.arange(i, i + m) if index is None else index[i : i + m])
            n_before = self._n
            hit = self._chunk(x[i : i + m], pos)
            if hit is None:
                i += m
                size *= 2
            else:
                detections.append(hit[1])
                i += hit[0] + 1
                size = max(MIN_CHUNK, n_before + hit[0] + 1)  # guess: as long as the last segment
        return detections
