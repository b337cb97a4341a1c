"""The small base every streaming change detector shares.

A detector takes a batch of values with ``update(values)`` and returns the detections the
batch caused, each with the stream position where it fired and an estimate of where the change
began. Positions count every value ever passed to ``update`` (0-based), non-finite ones
included, so the caller can map them back to events; non-finite values themselves are ignored.
After a detection a detector restarts from the values after it (river's convention), so one
persistent change gives one detection - unless told to keep its reference, as the monitor's
CUSUMs are (``rebaseline=False``), to keep confirming a drift while it lasts.

State moves through ``to_dict``/``from_dict`` (plain JSON types) and ``snapshot``/``restore``
(versioned JSON bytes). Never pickle: snapshots cross hosts and versions.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import orjson

FloatArray = npt.NDArray[np.float64]

SNAPSHOT_FORMAT = "streamwatch.detector"


class SnapshotError(ValueError):
    """A snapshot this build cannot restore."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One alarm: where it fired, where the change likely began, and the evidence."""

    at: int  # stream position of the value that made the detector fire
    start: int  # estimated stream position of the first changed value (<= at)
    statistic: float
    threshold: float


class Detector(abc.ABC):
    """Base class of streaming detectors. Subclasses set ``name`` and ``version``."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    _registry: ClassVar[dict[str, type[Detector]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Detector._registry[cls.name] = cls

    def __init__(self) -> None:
        self.n_seen = 0  # values passed to update(), finite or not

    @abc.abstractmethod
    def update(self, values: npt.ArrayLike) -> list[Detection]:
        """Feed a batch in stream order; return the detections it caused, in order."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Parameters and state as plain JSON types."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> Detector:
        """The inverse of :meth:`to_dict`."""

    def snapshot(self) -> bytes:
        return orjson.dumps(
            {
                "format": SNAPSHOT_FORMAT,
                "detector": self.name,
                "version": self.version,
                "state": self.to_dict(),
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @staticmethod
    def restore(data: bytes) -> Detector:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise SnapshotError(f"detector snapshot is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError("not a streamwatch detector snapshot")
        cls = Detector._registry.get(str(doc.get("detector")))
        if cls is None:
            raise SnapshotError(f"unknown detector {doc.get('detector')!r}")
        if doc.get("version") != cls.version:
            raise SnapshotError(
                f"{cls.name} snapshot version {doc.get('version')!r}; this build reads {cls.version}"
            )
        return cls.from_dict(doc["state"])


def as_values(values: npt.ArrayLike) -> FloatArray:
    """A batch as a 1-d float array (a scalar becomes a batch of one)."""
    return np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
