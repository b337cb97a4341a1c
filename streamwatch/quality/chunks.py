"""Per-chunk summaries of a model's events, so a sliding window is checked without rescanning it.

:class:`~streamwatch.quality.watch.QualityWatch` evaluates a window of ``window_size`` events
every ``step`` events. Each event is summarised once, in the chunk of ``step`` events it falls
in (:func:`summarise`, all chunks of a batch and all features at once): counts of null,
invalid, absent, finite and out-of-range values, values never seen in the reference,
duplicate ids and events with unknown fields (:class:`Layout`), the smallest and largest finite
value, and each numeric value's cell among its reference quantiles (:class:`SketchCells`). A
window is then the sum of its ``window_size / step`` chunks (:meth:`Chunks.windows`, all windows
of a batch at once).

The cell counts bound the window's KS distance to the reference from above, so a screen on the
bound never misses a feature the exact test would flag; the few windows that pass it are tested
exactly on their raw rows (kept in the watch's rings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.quality.ks import sketch_cdf

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

BINS = 100  # the intervals between a 101-point sketch's quantiles: 1 % of the reference each
COARSE = 20  # groups of cells for a first, looser KS bound over all windows


@dataclass(frozen=True, slots=True)
class Layout:
    """Columns of :attr:`Chunks.counts` for ``k`` numeric and ``c`` categorical features.

    Per feature (numeric, then categorical): nulls (missing, not invalid), invalid values and
    absent keys; per numeric feature: finite values and finite values outside the reference
    range; per categorical feature: values the reference never saw; then duplicate ids and
    events with unknown fields.

    Examples
    --------
    >>> lay = Layout.of(2, 1)
    >>> lay.missing, lay.finite, lay.new, lay.dup, lay.unknown, lay.width
    (slice(0, 3, None), slice(9, 11, None), slice(13, 14, None), 14, 15, 16)
    """

    missing: slice
    bad: slice
    absent: slice
    finite: slice
    outside: slice
    new: slice
    dup: int
    unknown: int
    width: int

    @classmethod
    @cache
    def of(cls, k: int, c: int) -> Layout:
        f = k + c
        ends = np.cumsum([f, f, f, k, k, c])
        missing, bad, absent, finite, outside, new = (
            slice(int(e - n), int(e)) for e, n in zip(ends, [f, f, f, k, k, c], strict=True)
        )
        dup = int(ends[-1])
        return cls(missing, bad, absent, finite, outside, new, dup, dup + 1, dup + 2)


@dataclass(slots=True)
class Rows:
    """Consecutive events of one model, column by column; row 0 is model event index ``start``."""

    start: int
    x: FloatArray  # (n, k) numeric values, NaN: missing or invalid
    codes: IntArray  # (n, c) category codes, -1: missing
    bad: BoolArray  # (n, k + c) value present but invalid
    absent: BoolArray  # (n, k + c) key not in the event
    dup: BoolArray  # (n,) event id seen before
    unknown: BoolArray  # (n,) event has fields the model does not declare
    times: IntArray  # (n,) event times (ms)

    def __len__(self) -> int:
        return len(self.times)

    def span(self, first: int, stop: int) -> Rows:
        """The events of model event indices ``first`` to ``stop`` (exclusive); views, no copies."""
        a, b = first - self.start, stop - self.start
        return Rows(
            first, self.x[a:b], self.codes[a:b], self.bad[a:b], self.absent[a:b], self.dup[a:b],
            self.unknown[a:b], self.times[a:b],
        )  # fmt: skip

    def then(self, later: Rows) -> Rows:
        """These events followed by ``later``."""
        return Rows(
            self.start,
            np.concatenate([self.x, later.x]),
            np.concatenate([self.codes, later.codes]),
            np.concatenate([self.bad, later.bad]),
            np.concatenate([self.absent, later.absent]),
            np.concatenate([self.dup, later.dup]),
            np.concatenate([self.unknown, later.unknown]),
            np.concatenate([self.times, later.times]),
        )

    def null(self) -> BoolArray:
        """Per event and feature (numeric, then categorical): the value is null (not invalid)."""
        k = self.x.shape[1]
        return np.concatenate([np.isnan(self.x) & ~self.bad[:, :k], self.codes < 0], axis=1)


@dataclass(slots=True)
class Chunks:
    """Summaries of consecutive chunks (or windows) of events, one row each (see :func:`summarise`)."""

    counts: IntArray  # (n, Layout.width)
    lo: FloatArray  # (n, k) smallest finite value (inf: none)
    hi: FloatArray  # (n, k) largest finite value (-inf: none)
    hist: npt.NDArray[np.int32]  # (n, k, BINS) finite values per reference cell (SketchCells)

    @classmethod
    def empty(cls, n: int, layout: Layout) -> Chunks:
        k = layout.finite.stop - layout.finite.start
        return cls(
            np.zeros((n, layout.width), dtype=np.int64),
            np.full((n, k), np.inf),
            np.full((n, k), -np.inf),
            np.zeros((n, k, BINS), dtype=np.int32),
        )

    def __len__(self) -> int:
        return len(self.counts)

    def take(self, rows: IntArray) -> Chunks:
        return Chunks(self.counts[rows], self.lo[rows], self.hi[rows], self.hist[rows])

    def put(self, rows: IntArray, other: Chunks) -> None:
        self.counts[rows], self.lo[rows], self.hi[rows] = other.counts, other.lo, other.hi
        self.hist[rows] = other.hist

    def then(self, later: Chunks) -> Chunks:
        return Chunks(
            np.concatenate([self.counts, later.counts]),
            np.concatenate([self.lo, later.lo]),
            np.concatenate([self.hi, later.hi]),
            np.concatenate([self.hist, later.hist]),
        )

    def windows(self, blocks: int) -> Windows:
        """Every run of ``blocks`` consecutive chunks combined, one row per run (by its last chunk).

        Examples
        --------
        >>> c = Chunks.empty(4, Layout.of(1, 0))
        >>> c.counts[:, 0] = [1, 2, 3, 4]
        >>> c.lo[:, 0] = [5.0, 1.0, 7.0, 6.0]
        >>> w = c.windows(2)
        >>> w.counts[:, 0].tolist(), w.lo[:, 0].tolist()
        ([3, 5, 7], [1.0, 1.0, 6.0])
        """

        n, k = self.lo.shape
        runs = n - blocks + 1

        def combine(a: npt.NDArray[Any], how: np.ufunc) -> npt.NDArray[Any]:
            out = a[:runs].copy()  # blocks is small (window / step): a few whole-array steps
            for i in range(1, blocks):
                how(out, a[i : i + runs], out=out)
            return out

        return Windows(
            combine(self.counts, np.add),
            combine(self.lo, np.minimum),
            combine(self.hi, np.maximum),
            combine(self.hist.reshape(n, k, COARSE, BINS // COARSE).sum(axis=-1), np.add),
            self,
            blocks,
        )


@dataclass(slots=True)
class Windows:
    """Summaries of windows of ``blocks`` consecutive chunks (see :meth:`Chunks.windows`): their
    counts and extremes, their cell counts by groups of ``BINS // COARSE`` cells; the cell counts
    themselves are summed only for the few windows and features that need them (:meth:`fine`)."""

    counts: IntArray  # (n, Layout.width)
    lo: FloatArray  # (n, k)
    hi: FloatArray  # (n, k)
    coarse: IntArray  # (n, k, COARSE)
    chunks: Chunks  # the chunks, window i being chunks i to i + blocks - 1
    blocks: int

    def fine(self, windows: IntArray, features: IntArray) -> IntArray:
        """Cell counts ``(len(windows), BINS)`` of feature ``features[i]`` in window ``windows[i]``."""
        rows = windows[:, None] + np.arange(self.blocks)
        out: IntArray = self.chunks.hist[rows, features[:, None]].sum(axis=1)
        return out


class SketchCells:
    """Each numeric feature's value line cut at its reference quantiles, to bound KS distances.

    ``quantiles`` are ``(k, 101)`` sketches (:mod:`streamwatch.quality.ks`). A value's cell is
    its count of inner quantiles (the 99 between minimum and maximum) at or below it, so cell
    ``b`` spans 1 % of the reference; a value equal to a tied quantile (an atom of a discrete
    feature) gets a cell of its own, one the tie leaves empty. From a sample's counts per cell
    :meth:`ks_bound` bounds its :func:`~streamwatch.quality.ks.ks_distance` to the sketch from
    above, within about ``1 / BINS``; from its counts per group of ``BINS // COARSE`` cells
    :meth:`coarse_bound` does too, within about ``1 / COARSE`` (cheaper, over many windows).

    Cells are found for all features at once: a uniform grid over the inner quantiles gives the
    distinct quantiles below the value's grid cell, a few comparisons the ones inside it (the
    grid and the comparisons use the same arithmetic for values and quantiles, so the count is
    exact); a feature whose quantiles crowd a grid cell is searched by binary search.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.vstack([np.linspace(0.0, 1.0, 101), np.r_[np.zeros(51), np.linspace(0.1, 5.0, 50)]])
    >>> cells = SketchCells(q)
    >>> cells.cells(np.array([[0.005, 0.0], [0.5, 0.0], [0.995, 0.05], [7.0, 7.0]])).tolist()
    [[0, 1], [50, 1], [99, 50], [99, 99]]
    >>> u = (np.arange(1000) + 0.5) / 1000  # exactly like the first reference
    >>> h = np.stack([np.bincount(cells.cells(np.c_[u, u])[:, 0], minlength=BINS), np.zeros(BINS)])
    >>> cells.ks_bound(h, np.array([0, 1])).round(3).tolist()
    [0.01, nan]
    >>> cells.coarse_bound(h.reshape(1, 2, COARSE, -1).sum(axis=-1)).round(3).tolist()
    [[0.05, nan]]
    """

    GRID = 1024  # grid cells over each feature's inner quantiles
    ROUNDS = 3  # comparisons inside a grid cell; more distinct quantiles in one: binary search

    def __init__(self, quantiles: FloatArray) -> None:
        q = np.asarray(quantiles, dtype=np.float64)
        k = len(q)
        self.k = k
        inner = q[:, 1:-1]
        self._scale, self._offset = np.zeros(k), np.ones(k)
        # per feature, indexed by d, the count of distinct inner quantiles at or below a value
        # (tables of small ints: a watch per model keeps them); edges: -inf, those quantiles, NaN
        self._edges = np.full((k, BINS + 1), np.nan)
        self._edges[:, 0] = -np.inf
        self._below = np.zeros((k, BINS + 1), dtype=np.int8)  # cell of a value above the d-th
        self._at = np.zeros((k, BINS + 1), dtype=np.int8)  # cell of a value equal to the d-th
        self._first = np.zeros((k, self.GRID + 2), dtype=np.uint8)  # d at a grid cell's start
        self._distinct = np.zeros(k, dtype=np.int64)
        self._searched: list[int] = []
        self._rounds_of = np.zeros(k, dtype=np.int64)
        bounds = np.empty((4, k, BINS))
        rounds, tied = 0, []
        for j in range(k):
            bounds[:, j] = self._build(j, q[j], inner[j])
            rounds = max(rounds, 0 if j in self._searched else int(self._rounds_of[j]))
            if (inner[j, 1:] == inner[j, :-1]).any():
                tied.append(j)
        self._rounds = rounds
        self._tied = np.array(tied, dtype=np.int64)  # features with atoms (tied quantiles)
        self._bounds = _outward(bounds)
        groups = bounds.reshape(4, k, COARSE, BINS // COARSE)  # a group's CDF range holds its cells'
        self._coarse = np.stack(
            [np.minimum(groups[0], groups[2]).min(axis=-1), np.maximum(groups[1], groups[3]).max(axis=-1)]
        )
        rows = np.arange(k)
        self._grid_rows, self._rows = rows * (self.GRID + 2), rows * (BINS + 1)

    def _build(self, j: int, q: FloatArray, inner: FloatArray) -> FloatArray:
        """Tables of feature ``j``; its cells' CDF ranges (:meth:`_cell_bounds`)."""
        values, first_at, counts = np.unique(inner, return_index=True, return_counts=True)
        last_at = first_at + counts  # inner quantile indices 1..99: first_at + 1 .. last_at
        tied = counts >= 2  # an atom: its values get the empty cell first_at + 1
        d = len(values)
        self._distinct[j] = d
        self._edges[j, 1 : d + 1] = values
        self._below[j, 1 : d + 1] = last_at
        self._at[j, 1 : d + 1] = np.where(tied, first_at + 1, last_at)
        span = float(values[-1] - values[0])
        if span > 0:
            self._scale[j] = self.GRID / span
            self._offset[j] = 1.0 - values[0] * self._scale[j]
        per_cell = np.bincount(self._grid(values[None, :], j)[0], minlength=self.GRID + 2)
        self._rounds_of[j] = per_cell.max()
        if per_cell.max() > self.ROUNDS:
            self._searched.append(j)
        else:
            self._first[j] = np.cumsum(per_cell) - per_cell
        return self._cell_bounds(q, values, first_at + 1, last_at, tied)

    @staticmethod
    def _cell_bounds(
        q: FloatArray, values: FloatArray, first: IntArray, last: IntArray, tied: BoolArray
    ) -> FloatArray:
        """``(4, BINS)`` per cell: what the reference CDF is compared with (see :meth:`ks_bound`).

        A cell between two distinct quantiles holds values whose CDF (right or left limit) lies
        in ``[lo, hi]``: ``lo`` the CDF at the lower quantile (its left limit when the cell
        includes it), ``hi`` the left limit at the upper one. An atom's cell knows its value's
        CDF and left limit exactly. Cells no value can reach compare with nothing (+-2).
        """
        right, left = sketch_cdf(q, values, "right"), sketch_cdf(q, values, "left")
        out = np.empty((4, BINS))
        out[0], out[1], out[2], out[3] = 2.0, -2.0, 2.0, -2.0  # Z - lo, hi - Z, A - lo, hi - A
        lo = np.concatenate([[0.0], np.where(tied, right, left)])
        hi = np.concatenate([left, [1.0]])
        between = np.concatenate([[0], last])
        out[0, between], out[3, between] = lo, hi
        out[:, first[tied]] = [right[tied], right[tied], left[tied], left[tied]]
        return out

    def _grid(self, x: FloatArray, j: int | slice = slice(None)) -> IntArray:
        """Grid cell (0: below the quantiles, GRID + 1: above; NaN: 0) of each value."""
        with np.errstate(over="ignore"):  # a huge value: +-inf, still past the last cell
            t = x * self._scale[j]
            t += self._offset[j]
        np.fmax(t, 0.0, out=t)  # fmax: NaN -> 0
        np.minimum(t, self.GRID + 1, out=t)
        out: IntArray = t.astype(np.int64)
        return out

    def _counts(self, x: FloatArray) -> npt.NDArray[np.uint8]:
        """Distinct inner quantiles at or below each value (exact; NaN pads compare false)."""
        d = np.take(self._first, self._grid(x) + self._grid_rows)
        for _ in range(self._rounds):
            d += np.take(self._edges, d + self._rows + 1) <= x
        for j in self._searched:
            d[:, j] = np.searchsorted(self._edges[j, 1 : self._distinct[j] + 1], x[:, j], side="right")
        return d

    def cells(self, x: FloatArray) -> IntArray:
        """Cell of each value of ``x`` (``(n, k)``; NaN: a cell, to be masked by the caller)."""
        d = self._counts(x) + self._rows
        out: IntArray = np.take(self._below, d)
        if len(self._tied):  # values equal to an atom move to its own cell
            t = self._tied
            at_atom = x[:, t] == np.take(self._edges, d[:, t])
            out[:, t] = np.where(at_atom, np.take(self._at, d[:, t]), out[:, t])
        return out

    def ks_bound(self, hist: IntArray, features: IntArray) -> FloatArray:
        """Upper bound on the KS distance to the sketch of feature ``features[i]`` of the values
        counted per cell in ``hist[i]`` (``(n, BINS)``); NaN without values.

        With ``A`` and ``Z`` the shares of values before and up to a cell, a cell contributes
        ``Z - lo`` and ``hi - A`` (an atom: ``|Z - F(v)|`` and ``|A - F(v-)|``): inside a cell
        neither the sample's CDF nor the reference's leaves those ranges.
        """
        cum = np.cumsum(hist, axis=-1)
        inv = 1.0 / np.maximum(cum[:, -1:], 1)
        z, a = cum * inv, (cum - hist) * inv
        zl, zh, al, ah = self._bounds[:, features]
        gap = np.maximum(np.maximum(z - zl, zh - z), np.maximum(a - al, ah - a)).max(axis=-1)
        out: FloatArray = np.where(cum[:, -1] > 0, gap, np.nan)
        return out

    def coarse_bound(self, coarse: IntArray) -> FloatArray:
        """:meth:`ks_bound` of every feature from counts per group of cells (``(..., k, COARSE)``):
        a group's CDF range spans its cells', so the bound is never below the fine one."""
        cum = np.cumsum(coarse, axis=-1)
        inv = 1.0 / np.maximum(cum[..., -1:], 1)
        z, a = cum * inv, (cum - coarse) * inv
        lo, hi = self._coarse
        z -= lo  # in place from here: the arrays are (windows, k, COARSE)
        np.subtract(hi, a, out=a)
        np.maximum(z, a, out=z)
        out: FloatArray = np.where(cum[..., -1] > 0, z.max(axis=-1), np.nan)
        return out


def _outward(bounds: FloatArray) -> npt.NDArray[np.float32]:
    """The ``(4, ...)`` cell bounds of :meth:`SketchCells._cell_bounds` in single precision,
    rounded so the KS bound can only grow: lower ends down, upper ends up."""
    out = bounds.astype(np.float32)
    down = np.nextafter(out, np.float32(-np.inf))
    up = np.nextafter(out, np.float32(np.inf))
    for i, lower in enumerate((True, False, True, False)):  # Z - lo, hi - Z, A - lo, hi - A
        if lower:
            out[i] = np.where(out[i] > bounds[i], down[i], out[i])
        else:
            out[i] = np.where(out[i] < bounds[i], up[i], out[i])
    return out


def summarise(
    rows: Rows,
    chunks: int,
    step: int,
    *,
    cells: SketchCells,
    minimum: FloatArray,
    maximum: FloatArray,
    new_values: Sequence[BoolArray],
) -> Chunks:
    """Summaries of the first ``chunks`` chunks of ``step`` events of ``rows`` (see :class:`Layout`).

    ``cells``: the numeric features' reference cells (:class:`SketchCells`);
    ``minimum``/``maximum``: their reference ranges; ``new_values[j]``: per code of categorical
    feature ``j``, whether the reference never saw its value.
    """
    n = chunks * step
    x, codes, bad = rows.x[:n], rows.codes[:n], rows.bad[:n]
    k, c = x.shape[1], codes.shape[1]
    lay = Layout.of(k, c)
    nan, finite = np.isnan(x), np.isfinite(x)
    with np.errstate(invalid="ignore"):  # a feature without a reference range: never outside
        outside = finite & ((x < minimum) | (x > maximum))
    counts = np.zeros((chunks, lay.width), dtype=np.int64)

    def count(column: slice | int, flags: BoolArray) -> None:
        """Per chunk, events whose flag is set (flags all false in clean batches: skipped)."""
        if flags.any():
            counts[:, column] = flags.reshape(chunks, step, -1).sum(axis=1).reshape(counts[:, column].shape)

    count(lay.missing, np.concatenate([nan & ~bad[:, :k], codes < 0], axis=1))
    count(lay.bad, bad)
    count(lay.absent, rows.absent[:n])
    if nan.any() or not finite.all():
        count(lay.finite, finite)
    else:  # the common batch without gaps
        counts[:, lay.finite] = step
    count(lay.outside, outside)
    count(lay.new, _new_values(codes, new_values))
    count(lay.dup, rows.dup[:n])
    count(lay.unknown, rows.unknown[:n])
    lo, hi = _extremes(x, nan, finite, chunks)
    cell = (
        cells.cells(x).reshape(chunks, step, k)
        + ((np.arange(chunks)[:, None] * k + np.arange(k)) * BINS)[:, None]
    )
    hist = np.bincount(
        cell.ravel() if finite.all() else cell[finite.reshape(chunks, step, k)], minlength=chunks * k * BINS
    )
    return Chunks(counts, lo, hi, hist.reshape(chunks, k, BINS).astype(np.int32))


def _new_values(codes: IntArray, new_values: Sequence[BoolArray]) -> BoolArray:
    """Per event and categorical feature: its value is one the reference never saw."""
    new = np.zeros(codes.shape, dtype=bool)
    for j, table in enumerate(new_values):
        if table.any():  # a code past the table (or -1, missing) reads the appended False
            padded = np.append(table, False)
            new[:, j] = padded[np.minimum(codes[:, j], len(table))]
    return new


def _extremes(x: FloatArray, nan: BoolArray, finite: BoolArray, chunks: int) -> tuple[FloatArray, FloatArray]:
    """Per chunk and feature, the smallest and largest finite value (inf and -inf: none)."""
    # rows per chunk given, not -1: a model without numeric features has an empty x
    blocks = x.reshape(chunks, x.shape[0] // chunks, x.shape[1])
    if finite.sum() + nan.sum() == x.size:  # no infinities: NaN-ignoring reductions
        lo, hi = np.fmin.reduce(blocks, axis=1), np.fmax.reduce(blocks, axis=1)
        none = np.isnan(lo)
        return np.where(none, np.inf, lo), np.where(none, -np.inf, hi)
    fin = finite.reshape(blocks.shape)
    return np.where(fin, blocks, np.inf).min(axis=1), np.where(fin, blocks, -np.inf).max(axis=1)


__all__ = ["BINS", "COARSE", "Chunks", "Layout", "Rows", "SketchCells", "Windows", "summarise"]
