"""Schema checks of one model's events: unknown fields, absent required fields, duplicate ids.

:class:`SchemaTracker` is the per-model state the :class:`~streamwatch.monitor.ModelMonitor` keeps
from its first event on: the fingerprints of the last ``capacity`` event ids (to find duplicates)
and the feature names the model knows (its configured features, plus those of its profiles).
:meth:`SchemaTracker.scan` looks at a batch once per event with C-level operations only:

- ``len(features)`` and ``features.keys() >= configured`` per event (a dict-view comparison):
  an event with exactly the configured keys costs nothing more;
- only the events that fail it get a set difference: which configured features are absent (the
  key is not in the event at all - a key present with ``null`` is a *null*, not an absent field)
  and which keys are unknown (neither configured nor in a profile);
- an event id's 64-bit fingerprint (:func:`streamwatch.ids.event_hash`, the hash the label join
  keys it by, so a batch's ids are hashed once for both) looked up in a set; the set holds the
  last ``capacity`` distinct fingerprints (a FIFO ring), so a duplicate is "the same id within
  the last ``capacity`` distinct ids of the model".

The result (:class:`SchemaScan`) is per event, for the :class:`~streamwatch.quality.watch.QualityWatch`
windows; the tracker's state snapshots to plain JSON, bounded by ``capacity`` (8 bytes per id,
base64).

Examples
--------
>>> t = SchemaTracker(["a", "b"], capacity=100)
>>> s = t.scan([{"a": 1, "b": 2}, {"a": 1, "c": 3}, {"a": 1, "b": None}], ["e1", "e2", "e1"])
>>> s.duplicate.tolist(), s.absent.tolist(), s.unknown
([False, False, True], [[False, False], [False, True], [False, False]], [(1, ['c'])])
>>> SchemaTracker.from_dict(t.to_dict()).to_dict() == t.to_dict()
True
"""

from __future__ import annotations

import base64
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.ids import UIntArray, event_hash, event_hashes

BoolArray = npt.NDArray[np.bool_]
OTHER = "__other__"  # counter key of the unknown field names past the cap

# the fingerprint the ring holds (snapshots from before it, CRC-32 pairs, start the ring afresh)
FINGERPRINT = "blake2b-64"


def fingerprint(event_id: str) -> int:
    """A stable 64-bit fingerprint of an event id (the same in every process, unlike ``hash``).

    >>> fingerprint("e1") == fingerprint("e1") != fingerprint("1e")
    True
    """
    return event_hash(event_id)


@dataclass(slots=True)
class SchemaScan:
    """Per event of a batch: a duplicate id; configured features absent; unknown keys."""

    duplicate: BoolArray  # (n,)
    absent: BoolArray | None  # (n, features) in the schema's order, None when nothing is absent
    unknown: list[tuple[int, list[str]]]  # (row, sorted unknown keys) for the rows that have any

    def part(self, a: int, b: int) -> SchemaScan:
        """Rows ``a`` to ``b`` (exclusive), numbered from 0."""
        return SchemaScan(
            self.duplicate[a:b],
            None if self.absent is None else self.absent[a:b],
            [(i - a, names) for i, names in self.unknown if a <= i < b],
        )

    def absent_counts(self, k: int) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = (
            np.zeros(k, dtype=np.int64) if self.absent is None else self.absent.sum(axis=0).astype(np.int64)
        )
        return out


def count_capped(counter: Counter[str], names: Iterable[str], cap: int) -> None:
    """Count ``names`` in ``counter``, by name for at most ``cap`` distinct names; further
    names are counted under ``__other__`` (so the counter stays bounded)."""
    for name in names:
        if name in counter or len(counter) - (OTHER in counter) < cap:
            counter[name] += 1
        else:
            counter[OTHER] += 1


class SchemaTracker:
    """Recent event ids and known field names of one model (see the module docstring)."""

    def __init__(self, names: Sequence[str], known: Iterable[str] = (), capacity: int = 5_000) -> None:
        self.names = list(names)
        self.index = {n: j for j, n in enumerate(self.names)}
        self.required = frozenset(self.names)
        self.known = frozenset(self.names) | frozenset(known)
        self.capacity = int(capacity)
        self._ring: deque[int] = deque()
        self._recent: set[int] = set()

    def scan(
        self, rows: Sequence[dict[str, Any]], event_ids: Sequence[str], hashes: UIntArray | None = None
    ) -> SchemaScan:
        """Absent, unknown and duplicate per event; ``hashes`` are the ids' :func:`event_hashes`
        when the caller has them already."""
        n, k, required = len(rows), len(self.names), self.required
        complete = [r.keys() >= required for r in rows]
        lengths = list(map(len, rows))
        absent: BoolArray | None = None
        unknown: list[tuple[int, list[str]]] = []
        if not all(complete) or any(length != k for length in lengths):
            known, index = self.known, self.index
            for i, r in enumerate(rows):
                present = k
                if not complete[i]:
                    gone = required - r.keys()
                    if absent is None:
                        absent = np.zeros((n, k), dtype=bool)
                    for name in gone:
                        absent[i, index[name]] = True
                    present -= len(gone)
                if lengths[i] > present:  # keys beyond the configured ones: unknown or in a profile
                    extra = r.keys() - known
                    if extra:
                        unknown.append((i, sorted(extra)))
        return SchemaScan(self._duplicates(event_ids, hashes), absent, unknown)

    def scan_conforming(self, event_ids: Sequence[str], hashes: UIntArray | None = None) -> SchemaScan:
        """:meth:`scan` of events known to hold exactly the configured features (decoded typed):
        only their duplicates are left to find."""
        return SchemaScan(self._duplicates(event_ids, hashes), None, [])

    def _duplicates(self, event_ids: Sequence[str], hashes: UIntArray | None) -> BoolArray:
        recent, ring, cap = self._recent, self._ring, self.capacity
        out = np.zeros(len(event_ids), dtype=bool)
        if cap <= 0:
            return out
        prints: list[int] = (event_hashes(event_ids) if hashes is None else hashes).tolist()
        if len(prints) <= cap and recent.isdisjoint(prints) and len(set(prints)) == len(prints):
            # no id is a repeat (evictions only remove older ids): the ring takes them all
            drop = len(ring) + len(prints) - cap
            if drop > 0:
                gone = [ring.popleft() for _ in range(drop)]
                recent.difference_update(gone)
            ring.extend(prints)
            recent.update(prints)
            return out
        for i, h in enumerate(prints):
            if h in recent:
                out[i] = True
                continue
            if len(ring) >= cap:
                recent.discard(ring.popleft())
            ring.append(h)
            recent.add(h)
        return out

    def to_dict(self) -> dict[str, Any]:
        ids = np.fromiter(self._ring, dtype=np.uint64, count=len(self._ring))
        return {
            "names": self.names,
            "known": sorted(self.known - self.required),
            "capacity": self.capacity,
            "recent_ids": base64.b64encode(ids.astype("<u8").tobytes()).decode("ascii"),
            "fingerprint": FINGERPRINT,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SchemaTracker:
        t = cls(d["names"], d["known"], int(d["capacity"]))
        ids = np.frombuffer(base64.b64decode(d["recent_ids"]), dtype="<u8")
        if d.get("fingerprint") != FINGERPRINT:  # older fingerprints match none of ours
            ids = ids[:0]
        t._ring = deque(ids.tolist())
        t._recent = set(t._ring)
        return t


def profile_problems(features: dict[str, str], profile: dict[str, Any]) -> list[str]:
    """What keeps ``profile`` from being the reference of a model with ``features`` (name ->
    ``"numeric"``/``"categorical"``): each configured feature must be in it with that type.

    >>> profile_problems({"a": "numeric"}, {"features": {"a": {"type": "categorical"}}})
    ["feature 'a' is numeric in the config but categorical in the profile"]
    """
    out = []
    described = profile.get("features") or {}
    for name, kind in features.items():
        p = described.get(name)
        if p is None:
            out.append(f"feature {name!r} ({kind}) is not in the profile")
        elif p.get("type") != kind:
            out.append(f"feature {name!r} is {kind} in the config but {p.get('type')} in the profile")
    return out


__all__ = ["OTHER", "SchemaScan", "SchemaTracker", "count_capped", "fingerprint", "profile_problems"]
