"""The label join: a bounded store of recent predictions that delayed labels are matched against.

A label names its prediction by ``event_id``. The store keeps, per open prediction, only what the
metrics need (event time, predicted class or value, class scores) in numpy columns, with a dict
from event id to row. Three bounds keep it finite:

* a **TTL in event time**: predictions older than the newest prediction time minus ``ttl_ms``
  leave the store; a label that comes for one of them later is counted ``late`` (the hashes of
  expired ids are kept for another TTL to tell late labels from orphans);
* a **hard cap** on open predictions: when it is reached, the store keeps only event ids whose
  64-bit hash falls below a threshold that halves each time (deterministic sampling, the same on
  every worker and replay), so metrics over the kept predictions stay unbiased; labels of
  predictions outside the sample are counted ``sampled_out``;
* labels that arrive **before** their prediction wait up to ``wait_ms`` of event time (and at most
  ``cap`` of them), then count as ``orphan``.

Joined predictions stay in the store until they expire, so a second label for the same event is
recognised as a ``duplicate`` rather than an orphan.

Examples
--------
>>> import numpy as np
>>> join = LabelJoin(ttl_ms=60_000, wait_ms=10_000, cap=1000)
>>> join.add_predictions(["a", "b"], np.array([0, 1000]), np.array([1.0, 0.0]), None, None)
[]
>>> rows = join.match_labels(["b", "x", "b"], np.array([5000, 5000, 6000]), ["yes", "no", "yes"])
>>> rows.slots.tolist(), join.outcomes["joined"], join.outcomes["duplicate"], len(join.waiting)
([1], 1, 1, 1)
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.ids import UIntArray, event_hash, event_hashes
from streamwatch.jsonarrays import floats, packed

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

OUTCOMES = ("joined", "duplicate", "orphan", "late", "sampled_out")  # each label ends in one
_FULL = 1 << 32  # sampling threshold on the hash's top 32 bits: keep everything


@dataclass(slots=True)
class Joined:
    """Predictions matched by a batch of labels: store rows and the labels' values and times."""

    slots: IntArray
    labels: list[Any]  # as the label events carried them
    label_times: IntArray


class LabelJoin:
    """Open predictions and waiting labels of one model."""

    def __init__(self, ttl_ms: int, wait_ms: int, cap: int) -> None:
        self.ttl_ms, self.wait_ms, self.cap = int(ttl_ms), int(wait_ms), int(cap)
        self.threshold = _FULL  # keep ids whose hash >> 32 is below this
        self.index: dict[str, int] = {}
        size = 1024
        self.ids: npt.NDArray[np.object_] = np.empty(size, dtype=object)
        self.times = np.zeros(size, dtype=np.int64)
        self.predicted = np.zeros(size, dtype=np.float64)  # class code or value
        self.hashes = np.zeros(size, dtype=np.uint64)
        self.joined = np.zeros(size, dtype=bool)
        self.batch_of = np.zeros(size, dtype=np.int64)  # arrival batch number of each row
        self.scores: FloatArray | None = None  # (size, classes) when the model sends scores
        self.free: list[int] = list(range(size - 1, -1, -1))
        # (max time, batch number, slots) in arrival order; a slot reused since then no longer
        # carries the batch's number, so expiring the old batch leaves it alone
        self.batches: deque[tuple[int, int, IntArray]] = deque()
        self.batch_seq = 0
        self.expired: deque[tuple[int, UIntArray]] = deque()  # (expiry watermark, sorted hashes)
        self.waiting: dict[str, tuple[Any, int]] = {}  # early labels: id -> (label, label time)
        # (label time, id) of the waiting labels, oldest first; entries of labels that have since
        # joined or gone stay until they reach the top (lazy deletion: O(log n) per label)
        self._by_time: list[tuple[int, str]] = []
        self.last_kept: IntArray = np.zeros(0, dtype=np.int64)  # rows of the last batch stored
        # told which rows leave when the sample shrinks (before they are released)
        self.on_evict: Callable[[IntArray], None] | None = None
        self.watermark = np.iinfo(np.int64).min  # newest prediction time seen
        self.outcomes: Counter[str] = Counter({k: 0 for k in OUTCOMES})
        self.expired_unlabelled = 0  # predictions that left the store without a label

    def __len__(self) -> int:
        return len(self.index)

    @property
    def sample_rate(self) -> float:
        return self.threshold / _FULL

    def in_sample(self, hashes: UIntArray) -> npt.NDArray[np.bool_]:
        return np.asarray((hashes >> np.uint64(32)) < np.uint64(self.threshold))

    # -- predictions ------------------------------------------------------------------------

    def add_predictions(
        self,
        ids: list[str],
        times: IntArray,
        predicted: FloatArray,
        hashes: UIntArray | None,
        scores: FloatArray | None,
    ) -> list[tuple[int, Any, int]]:
        """Store a batch of predictions; return the early labels they complete as
        ``(slot, label, label time)``. Ids already in the store (duplicates) are skipped."""
        h = hashes if hashes is not None else event_hashes(ids)
        keep = self.in_sample(h)
        index = self.index
        kept = np.flatnonzero(keep).tolist()
        if len(kept) == len(ids) and index.keys().isdisjoint(ids):  # the common case, in C
            rows = kept
        else:
            rows = [i for i in kept if ids[i] not in index]
        if len(rows) != int(keep.sum()):  # drop repeats inside the batch too
            seen: set[str] = set()
            rows = [i for i in rows if not (ids[i] in seen or seen.add(ids[i]))]  # type: ignore[func-returns-value]
        self.last_kept = np.asarray(rows, dtype=np.int64)
        if rows:
            slots = self._allocate(len(rows))
            r = np.asarray(rows, dtype=np.int64)
            kept_ids = [ids[i] for i in rows]
            index.update(zip(kept_ids, slots.tolist(), strict=True))
            self.ids[slots] = kept_ids
            self.times[slots] = times[r]
            self.predicted[slots] = predicted[r]
            self.hashes[slots] = h[r]
            self.joined[slots] = False
            self.batch_seq += 1
            self.batch_of[slots] = self.batch_seq
            if scores is not None:
                self._ensure_scores(scores.shape[1])
                assert self.scores is not None
                self.scores[slots] = np.nan
                self.scores[slots, : scores.shape[1]] = scores[r]
            self.batches.append((int(times[r].max()), self.batch_seq, slots))
            self.watermark = max(self.watermark, int(times.max()))
        completed = self._complete_waiting(ids, rows) if self.waiting and rows else []
        self._expire()
        if len(index) > self.cap:
            self._shrink()
        return completed

    def _complete_waiting(self, ids: list[str], rows: list[int]) -> list[tuple[int, Any, int]]:
        row_ids = [ids[i] for i in rows]
        found = list(map(self.waiting.pop, row_ids, repeat(None)))  # one C-level pass
        hits = [(k, w) for k, w in enumerate(found) if w is not None]
        if not hits:
            return []
        slots = [self.index[row_ids[k]] for k, _ in hits]
        self.joined[slots] = True
        self.outcomes["joined"] += len(hits)
        return [(slot, w[0], w[1]) for slot, (_, w) in zip(slots, hits, strict=True)]

    def _allocate(self, n: int) -> IntArray:
        while len(self.free) < n:
            self._grow()
        free = self.free
        slots = free[len(free) - n :][::-1]  # what n pops from the end would give, in order
        del free[len(free) - n :]
        return np.asarray(slots, dtype=np.int64)

    def _grow(self) -> None:
        old = len(self.times)
        new = old * 2

        def widen(a: Any) -> Any:
            out = np.zeros((new, *a.shape[1:]), dtype=a.dtype) if a.dtype != object else np.empty(new, object)
            out[:old] = a
            return out

        self.ids, self.times, self.predicted = widen(self.ids), widen(self.times), widen(self.predicted)
        self.hashes, self.joined = widen(self.hashes), widen(self.joined)
        self.batch_of = widen(self.batch_of)
        if self.scores is not None:
            self.scores = widen(self.scores)
        self.free.extend(range(new - 1, old - 1, -1))

    def _ensure_scores(self, k: int) -> None:
        if self.scores is None:
            self.scores = np.full((len(self.times), k), np.nan)
        elif self.scores.shape[1] < k:
            wider = np.full((len(self.times), k), np.nan)
            wider[:, : self.scores.shape[1]] = self.scores
            self.scores = wider

    def _release(self, slots: IntArray) -> None:
        for event_id in self.ids[slots].tolist():
            self.index.pop(event_id, None)
        self.ids[slots] = None
        self.batch_of[slots] = 0
        self.free.extend(slots.tolist())

    def _expire(self) -> None:
        """Drop predictions past the TTL (whole arrival batches, oldest first)."""
        cutoff = self.watermark - self.ttl_ms
        while self.batches and self.batches[0][0] < cutoff:
            _, seq, slots = self.batches.popleft()
            live = slots[(self.batch_of[slots] == seq) & (self.ids[slots] != None)]  # noqa: E711
            if len(live):
                self.expired.append((self.watermark, np.sort(self.hashes[live])))
                self.expired_unlabelled += int((~self.joined[live]).sum())
                self._release(live)
        while self.expired and self.expired[0][0] < cutoff:
            self.expired.popleft()
        # early labels that waited long enough are orphans
        by_time, waiting = self._by_time, self.waiting
        while by_time and by_time[0][0] < self.watermark - self.wait_ms:
            t, k = heapq.heappop(by_time)
            w = waiting.get(k)
            if w is not None and w[1] == t:
                del waiting[k]
                self.outcomes["orphan"] += 1

    def earliest_waiting(self) -> int | None:
        """The label time of the oldest label still waiting for its prediction."""
        if len(self._by_time) > 2 * len(self.waiting) + 1024:  # mostly joined: rebuild, not pop each
            self._index_waiting()
        by_time, waiting = self._by_time, self.waiting
        while by_time:
            t, k = by_time[0]
            w = waiting.get(k)
            if w is not None and w[1] == t:
                return t
            heapq.heappop(by_time)
        return None

    def _index_waiting(self) -> None:
        self._by_time = [(t, k) for k, (_, t) in self.waiting.items()]
        heapq.heapify(self._by_time)

    def _shrink(self) -> None:
        """Over the cap: halve the sample until the store fits, evicting ids outside it."""
        while len(self.index) > self.cap and self.threshold > 1:
            self.threshold //= 2
            live = np.fromiter(self.index.values(), np.int64, len(self.index))
            out = live[~self.in_sample(self.hashes[live])]
            if self.on_evict is not None:
                self.on_evict(out)
            self._release(out)
        if len(self.waiting) > self.cap:  # early labels are bounded by the same cap, oldest go first
            for k in sorted(self.waiting, key=lambda k: self.waiting[k][1])[: len(self.waiting) - self.cap]:
                del self.waiting[k]
                self.outcomes["orphan"] += 1

    # -- labels -----------------------------------------------------------------------------

    def match_labels(self, ids: list[str], times: IntArray, labels: list[Any]) -> Joined:
        """Match a batch of labels; unmatched ones wait, or are counted as what they are."""
        get = self.index.get
        slots_or_none = [get(i) for i in ids]
        matched: list[int] = []
        rows: list[int] = []
        missing: list[int] = []
        for i, s in enumerate(slots_or_none):
            if s is None:
                missing.append(i)
            elif self.joined[s]:
                self.outcomes["duplicate"] += 1
            else:
                self.joined[s] = True  # a repeat inside this batch is now a duplicate
                matched.append(s)
                rows.append(i)
        self.outcomes["joined"] += len(matched)
        if missing:
            self._unmatched([ids[i] for i in missing], times[missing], [labels[i] for i in missing])
        r = np.asarray(rows, dtype=np.int64)
        return Joined(np.asarray(matched, dtype=np.int64), [labels[i] for i in rows], times[r])

    def _unmatched(self, ids: list[str], times: IntArray, labels: list[Any]) -> None:
        h = event_hashes(ids)
        outside = ~self.in_sample(h)
        late = np.zeros(len(ids), dtype=bool)
        for _, hashes in self.expired:
            late |= np.isin(h, hashes, assume_unique=False)
        self.outcomes["sampled_out"] += int((outside & ~late).sum())
        self.outcomes["late"] += int(late.sum())
        for i in np.flatnonzero(~outside & ~late).tolist():
            if ids[i] in self.waiting:
                self.outcomes["duplicate"] += 1
            else:
                t = int(times[i])
                self.waiting[ids[i]] = (labels[i], t)
                heapq.heappush(self._by_time, (t, ids[i]))
        if len(self.waiting) > self.cap:
            self._shrink()
        if len(self._by_time) > 2 * len(self.waiting) + 1024:  # mostly joined or gone: rebuild
            self._index_waiting()

    # -- snapshot ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        live = np.fromiter(self.index.values(), np.int64, len(self.index))
        live.sort()
        # a batch's slots as positions in ``live``: one mask and rank for all batches (a
        # membership test per batch costs a sort of the whole store each)
        alive = np.zeros(len(self.times), dtype=bool)
        alive[live] = True
        rank = np.cumsum(alive) - 1
        return {
            "ttl_ms": self.ttl_ms,
            "wait_ms": self.wait_ms,
            "cap": self.cap,
            "threshold": self.threshold,
            "watermark": self.watermark,
            "ids": self.ids[live].tolist(),
            "times": self.times[live],
            "predicted": packed(self.predicted[live]),
            # no hashes: they are the ids' (restore recomputes them; as text they cost 20 % of
            # a full store's snapshot and half the time of turning it into a dict)
            "joined": self.joined[live],
            "scores": None if self.scores is None else packed(self.scores[live]),
            "batch_of": self.batch_of[live],
            "batch_seq": self.batch_seq,
            "batches": [[t, q, rank[s[alive[s]]]] for t, q, s in self.batches],
            "expired": [[t, h] for t, h in self.expired],  # uint64 as JSON integers (see Rows)
            "waiting": [[k, v, t] for k, (v, t) in self.waiting.items()],
            "outcomes": dict(self.outcomes),
            "expired_unlabelled": self.expired_unlabelled,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelJoin:
        j = cls(d["ttl_ms"], d["wait_ms"], d["cap"])
        j.threshold, j.watermark = int(d["threshold"]), int(d["watermark"])
        n = len(d["ids"])
        while len(j.times) < n:
            j._grow()
        j.free = list(range(len(j.times) - 1, n - 1, -1))
        j.ids[:n] = d["ids"]
        j.index = {k: i for i, k in enumerate(d["ids"])}
        j.times[:n] = d["times"]
        j.predicted[:n] = floats(d["predicted"])
        j.hashes[:n] = np.asarray(d["hashes"], dtype=np.uint64) if "hashes" in d else event_hashes(d["ids"])
        j.joined[:n] = d["joined"]
        if d["scores"] is not None:
            s = floats(d["scores"]).reshape(n, -1)
            j._ensure_scores(s.shape[1])
            assert j.scores is not None
            j.scores[:n] = s
        j.batch_of[:n] = d["batch_of"]
        j.batch_seq = int(d["batch_seq"])
        j.batches = deque((int(t), int(q), np.asarray(s, dtype=np.int64)) for t, q, s in d["batches"])
        j.expired = deque((int(t), np.asarray(h, dtype=np.uint64)) for t, h in d["expired"])
        j.waiting = {k: (v, int(t)) for k, v, t in d["waiting"]}
        j._index_waiting()
        j.outcomes = Counter(d["outcomes"])
        j.expired_unlabelled = int(d["expired_unlabelled"])
        return j


__all__ = ["OUTCOMES", "Joined", "LabelJoin", "event_hash", "event_hashes"]
