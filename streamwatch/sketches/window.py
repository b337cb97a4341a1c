"""A count-based sliding window of histograms, kept as a ring of fixed-size blocks.

The window holds the last ``blocks`` blocks of ``step`` events each. Blocks close at fixed
event counts, so the window's content never depends on how events were batched; the
per-block histograms also let a detector estimate in which block a change began.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


class Segments(NamedTuple):
    """A batch cut at the rows that close blocks (see :meth:`BlockWindow.segments`)."""

    cuts: list[int]
    hist: IntArray
    closes: int


class BlockWindow:
    """Ring of ``blocks`` block histograms over ``total_bins`` flat bins.

    Examples
    --------
    >>> import numpy as np
    >>> w = BlockWindow(blocks=2, step=2, total_bins=3)
    >>> list(w.add(np.array([[0], [1], [1], [2], [2]]), np.arange(5)))
    [(1, 1), (3, 2)]
    >>> w.counts().tolist(), w.full
    ([1, 2, 1], True)
    >>> list(w.add(np.array([[0]]), np.array([5])))  # closes block 3, which pushes out block 1
    [(0, 3)]
    >>> w.counts().tolist()
    [1, 1, 2]
    """

    def __init__(self, blocks: int, step: int, total_bins: int) -> None:
        self.blocks = blocks
        self.step = step
        self.total_bins = total_bins
        self.ring = np.zeros((blocks, total_bins), dtype=np.int64)
        self.start_ms = np.zeros(blocks, dtype=np.int64)  # event time of each block's first event
        self.open = np.zeros(total_bins, dtype=np.int64)  # the block being filled
        self.open_events = 0
        self.open_start_ms = 0
        self.blocks_closed = 0
        self._sum = np.zeros(total_bins, dtype=np.int64)

    @property
    def full(self) -> bool:
        return self.blocks_closed >= self.blocks

    def counts(self) -> IntArray:
        """Histogram of the closed blocks in the window."""
        return self._sum

    def ordered_blocks(self) -> IntArray:
        """Closed blocks oldest first, shape ``(min(blocks, closed), total_bins)``."""
        k = min(self.blocks, self.blocks_closed)
        idx = (self.blocks_closed - k + np.arange(k)) % self.blocks
        return self.ring[idx]

    def ordered_starts(self) -> IntArray:
        k = min(self.blocks, self.blocks_closed)
        return self.start_ms[(self.blocks_closed - k + np.arange(k)) % self.blocks]

    def segments(self, flat_bins: IntArray) -> Segments:
        """The batch cut where its rows close blocks (``cuts``: segment bounds), each segment's
        histogram (one bincount: segment id * total_bins + bin), and how many blocks it closes
        (the first segments; a last one that does not close only fills the open block). Valid
        until the window changes: :meth:`counts_at_closes` and then :meth:`add` can share it."""
        n = flat_bins.shape[0]
        # rows that close a block: the open block needs step - open_events more
        first_close = self.step - self.open_events - 1
        ends = np.arange(first_close, n, self.step)
        cuts = [0, *(ends + 1).tolist()]
        if cuts[-1] != n:
            cuts.append(n)
        seg = np.repeat(np.arange(len(cuts) - 1), np.diff(cuts))
        valid = flat_bins >= 0
        keys = (seg[:, None] * self.total_bins + flat_bins)[valid]
        hist = np.bincount(keys, minlength=(len(cuts) - 1) * self.total_bins).reshape(-1, self.total_bins)
        return Segments(cuts, hist, len(ends))

    def counts_at_closes(self, flat_bins: IntArray, segments: Segments | None = None) -> IntArray:
        """The window's :meth:`counts` at each block that adding ``flat_bins`` would close, shape
        ``(closes, total_bins)``, without adding them: so detectors can score every evaluation
        of a batch in one vectorised call. Exact (integer counts), as :meth:`add` would give.

        >>> w = BlockWindow(blocks=2, step=2, total_bins=3)
        >>> w.counts_at_closes(np.array([[0], [1], [1], [2], [2]])).tolist()
        [[1, 1, 0], [1, 2, 1]]
        """
        _, hist, closes = self.segments(flat_bins) if segments is None else segments
        if closes == 0:
            return np.zeros((0, self.total_bins), dtype=np.int64)
        new = hist[:closes].copy()
        new[0] += self.open
        blocks = np.concatenate([self.ordered_blocks(), new])
        k = blocks.shape[0] - closes  # closed blocks already in the window
        cum = np.concatenate([np.zeros((1, self.total_bins), dtype=np.int64), np.cumsum(blocks, axis=0)])
        upto = np.arange(k + 1, k + closes + 1)
        window: IntArray = cum[upto] - cum[np.maximum(upto - self.blocks, 0)]
        return window

    def add(
        self, flat_bins: IntArray, times_ms: IntArray, segments: Segments | None = None
    ) -> Iterator[tuple[int, int]]:
        """Add events (rows of flat bin indices, -1 = missing) in order.

        Yields, each time a block closes, ``(row index of its last event, blocks closed)``,
        with the window as it is at that event, so the caller can evaluate its detectors there.
        The events are only all added once the iterator is exhausted. ``segments``: this
        batch's :meth:`segments`, when the caller has them already.
        """
        cuts, hist, _ = self.segments(flat_bins) if segments is None else segments
        for s in range(len(cuts) - 1):
            lo, hi = cuts[s], cuts[s + 1]
            if self.open_events == 0:
                self.open_start_ms = int(times_ms[lo])
            self.open += hist[s]
            self.open_events += hi - lo
            if self.open_events == self.step:
                self._close()
                yield hi - 1, self.blocks_closed

    def _close(self) -> None:
        slot = self.blocks_closed % self.blocks
        self._sum -= self.ring[slot]
        self.ring[slot] = self.open
        self._sum += self.open
        self.start_ms[slot] = self.open_start_ms
        self.blocks_closed += 1
        self.open = np.zeros(self.total_bins, dtype=np.int64)
        self.open_events = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "step": self.step,
            "total_bins": self.total_bins,
            "ring": self.ring.tolist(),
            "start_ms": self.start_ms.tolist(),
            "open": self.open.tolist(),
            "open_events": self.open_events,
            "open_start_ms": self.open_start_ms,
            "blocks_closed": self.blocks_closed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockWindow:
        w = cls(int(d["blocks"]), int(d["step"]), int(d["total_bins"]))
        w.ring = np.asarray(d["ring"], dtype=np.int64).reshape(w.blocks, w.total_bins)
        w.start_ms = np.asarray(d["start_ms"], dtype=np.int64)
        w.open = np.asarray(d["open"], dtype=np.int64)
        w.open_events = int(d["open_events"])
        w.open_start_ms = int(d["open_start_ms"])
        w.blocks_closed = int(d["blocks_closed"])
        w._sum = w.ring.sum(axis=0)  # slots never filled are zero
        return w
