"""Joined events in join-time order, however the predictions and labels topics interleave.

A prediction and its label are *joined* at event time ``max(prediction time, label time)``: the
moment both exist. The order in which a worker sees joins, though, depends on how far each
topic's consumer has got, which differs between runs, restarts and replays. The performance
windows, the baseline and above all the concept-drift CUSUM (a sequential test) must see one
order, so joined rows wait here until nothing still to come can join earlier, and then leave
sorted by ``(join time, event-id hash)``.

Nothing still to come can join before ``safe = min(label watermark, max(prediction watermark,
earliest waiting label))``, assuming each topic is in event-time order for a model:

* a label still to come has a time at or after the newest label seen, and so has its join;
* a prediction still to come has a time at or after the newest prediction seen; it joins either a
  label still to come (above) or a label waiting for it, no earlier than that label's time.

Rows with a join time at or below ``safe`` leave. When labels trail their predictions (the usual
case) no label waits and ``safe`` is the label watermark, so rows leave at once. Rows with equal
join times on both sides of a batch boundary keep their arrival order, and so do events that come
out of event-time order within a topic; both only reorder rows at nearly the same time.

Examples
--------
>>> import numpy as np
>>> order = JoinOrder()
>>> order.add(np.array([30, 10]), np.array([1.0, 0.0]), np.array([1.0, 1.0]), None,
...           np.array([5, 9]), np.array([7, 3], dtype=np.uint64))
>>> order.release(20)[0].tolist(), len(order)
([10], 1)
>>> order.release(30)[1].tolist()
[1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from streamwatch.jsonarrays import floats, packed

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
UIntArray = npt.NDArray[np.uint64]

# join time, truth, prediction, scores, prediction time, id hash
Chunk = tuple[IntArray, FloatArray, FloatArray, FloatArray | None, IntArray, UIntArray]


def pad_scores(s: FloatArray | None, n: int, k: int) -> FloatArray:
    """Scores widened to ``k`` classes (NaN for classes named after they were laid out)."""
    out = np.full((n, k), np.nan)
    if s is not None:
        out[:, : s.shape[1]] = s
    return out


def concat_columns(chunks: Sequence[tuple[Any, ...]], scores_at: int) -> tuple[Any, ...]:
    """Chunks of row columns joined column by column; the scores column (``scores_at``, None or
    ``(rows, classes)``) is widened to the most classes any chunk has."""
    k = max((c[scores_at].shape[1] for c in chunks if c[scores_at] is not None), default=0)
    return tuple(
        (np.concatenate([pad_scores(c[i], len(c[0]), k) for c in chunks]) if k else None)
        if i == scores_at
        else np.concatenate([c[i] for c in chunks])
        for i in range(len(chunks[0]))
    )


def safe_time(label_watermark: int, prediction_watermark: int, earliest_waiting: int | None) -> int:
    """The latest join time that no event still to come can join at or before (see the module)."""
    if earliest_waiting is None:
        return label_watermark
    return min(label_watermark, max(prediction_watermark, earliest_waiting))


class JoinOrder:
    """Joined rows held until their join time is safe, then released in join-time order."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def __len__(self) -> int:
        return sum(len(c[0]) for c in self.chunks)

    def add(
        self,
        at: IntArray,
        y_true: FloatArray,
        y_pred: FloatArray,
        scores: FloatArray | None,
        pred_times: IntArray,
        hashes: UIntArray,
    ) -> None:
        if len(at):
            self.chunks.append((at, y_true, y_pred, scores, pred_times, hashes))

    def keep(self, sampled: Callable[[UIntArray], npt.NDArray[np.bool_]]) -> None:
        """Only the rows whose id hash ``sampled`` keeps (the label store's sample shrank)."""
        if self.chunks:
            merged = self._merged()
            self.chunks = [take_rows(merged, sampled(merged[5]))]

    def release(self, safe: int, keep_at_most: int | None = None) -> Chunk:
        """Rows joined at or before ``safe``, sorted; beyond ``keep_at_most`` held rows the
        oldest leave too (a bound on memory when one topic stalls)."""
        merged = self._merged()
        at = merged[0]
        out = at <= safe
        if keep_at_most is not None and int((~out).sum()) > keep_at_most:
            held = np.flatnonzero(~out)
            oldest = held[np.lexsort((merged[5][held], at[held]))][: len(held) - keep_at_most]
            out[oldest] = True
        if out.all():
            self.chunks = []
            gone = merged
        else:
            self.chunks = [take_rows(merged, ~out)]
            gone = take_rows(merged, out)
        order = np.lexsort((gone[5], gone[0]))
        return take_rows(gone, order)

    def _merged(self) -> Chunk:
        if not self.chunks:
            e = np.zeros(0)
            i = np.zeros(0, np.int64)
            return i, e, e, None, i, np.zeros(0, np.uint64)
        if len(self.chunks) == 1:
            return self.chunks[0]
        return cast(Chunk, concat_columns(self.chunks, scores_at=3))

    def to_dict(self) -> dict[str, Any]:
        at, y, p, s, t, h = self._merged()
        return {"at": at, "y": packed(y), "p": packed(p), "s": packed(s), "t": t, "h": h}  # h: JSON integers

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JoinOrder:
        o = cls()
        n = len(d["at"])
        o.add(
            np.asarray(d["at"], dtype=np.int64),
            floats(d["y"]),
            floats(d["p"]),
            None if d["s"] is None else floats(d["s"]).reshape(n, -1),
            np.asarray(d["t"], dtype=np.int64),
            np.asarray(d["h"], dtype=np.uint64),
        )
        return o


def take_rows(c: Chunk, idx: npt.NDArray[Any] | slice) -> Chunk:
    """The rows ``idx`` (a mask, indices or a slice) of every column."""
    return (c[0][idx], c[1][idx], c[2][idx], None if c[3] is None else c[3][idx], c[4][idx], c[5][idx])


__all__ = ["Chunk", "JoinOrder", "concat_columns", "pad_scores", "safe_time", "take_rows"]
