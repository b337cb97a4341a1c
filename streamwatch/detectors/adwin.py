"""ADWIN (ADaptive WINdowing) change detector, equivalent to ``river.drift.ADWIN``.

ADWIN keeps a window of the recent values whose size adapts to the data: as long as the window
looks stationary it grows; when two sub-windows :math:`W_0` (older) and :math:`W_1` (newer)
have means that differ by more than

.. math::

    \\epsilon_{cut} = \\sqrt{2\\, m\\, \\sigma_W^2\\, \\delta'} + \\tfrac{2}{3}\\, \\delta'\\, m,
    \\qquad m = \\frac{1}{n_0 - l + 1} + \\frac{1}{n_1 - l + 1},
    \\qquad \\delta' = \\ln\\frac{2 \\ln |W|}{\\delta},

(with :math:`l` = ``min_window_length`` and :math:`\\sigma_W^2` the variance of the window)
it drops the oldest bucket of the window and reports a change. The window is stored as an
exponential histogram (ADWIN2): up to ``max_buckets`` buckets of each size :math:`2^i`, a
level that overflows merging its two oldest buckets into one of the next size, so the candidate
cut points are the bucket edges and the memory is logarithmic in the window length. The test
runs every ``clock`` values once more than ``grace_period`` values are in the window, over the
edges whose sub-windows both hold at least ``min_window_length`` values; after a cut the window
is tested again, until no edge cuts.

This module follows river 0.26 (its Rust core ``AdaptiveWindowing``) operation for operation:
the same bucket totals and variances, the same sums in the same order, so the detections are
river's exactly. Like river's ``ADWIN``, which builds a new ``AdaptiveWindowing`` on the
``update`` after a detection, the detector restarts from the value after a detection: the cut
first drops the older sub-window (``width``, ``estimation`` and ``variance`` show the kept newer
part until the next value), then the next value starts an empty window, its clock from zero.
``Detection.start`` is the position of the first value of the kept newer sub-window,
``statistic`` the :math:`|\\bar W_0 - \\bar W_1|` and ``threshold`` the
:math:`\\epsilon_{cut}` of the first cut.

Short windows in river's core. The window after a restart first goes to river's compiled core,
``river._river_rust.drift.AdaptiveWindowing``, one value at a time through a lazy C-level
``map`` that stops after the value it detects on: about half the cost per value of river's own
``ADWIN.update`` loop, and no cost per chunk or per detection of the screen below, which is what
frequent detections make expensive. The values are kept with their positions. On a detection
our own test runs on the bucket list rebuilt from them (the statistic and bound of the first
cut; the window after the cut by river's deletion formula, as many buckets as river's core
dropped, then our check that the result no longer cuts; any disagreement sends the values
through our path instead); once ``_RUST_SWITCH`` values are in without one, the window moves to
our path, faster on long windows. The saved state is always our path's (rebuilt from the kept
values when a snapshot is taken in the short phase), and without river's core, or with
``_RUST_SWITCH = 0``, every window takes our path. Results are the same bit for bit either way.

Our path. As river restarts after every detection, the window between detections holds
every finite value since the last restart, and its bucket layout is a function of its length
alone (the levels below the top hold ``max_buckets - 1`` buckets plus bit ``i`` of
``length + max_buckets - 1``; buckets are aligned on the window start). A batch is cut into
chunks, and for every check time of a chunk the running total and variance come from
``np.cumsum`` (in order, so bit for bit river's). Every (check time, bucket edge) pair is then
shown not to cut by a bound that carries a margin for rounding. Tier ``k`` bounds the edges whose
newer side holds ``4 * 2**k * clock`` to twice that many values over blocks of ``2**k`` check
times at once: centred on the window mean at the block start, the newer side's mean moves by at
most the range of the centred prefix sum over the block divided by its length. With
``clock=1`` the edges with a newer side shorter than 32 values are bounded per check time
instead, by the sliding range of the last values' prefix sums. The pairs a bound cannot clear
are tested one by one, window by window in time order, and only the check times still flagged
are tested exactly, on the bucket list river would hold then, rebuilt from the values by the
same pairwise merges. So the screen costs speed, never exactness, and a detection stops the
work on the chunk. Short runs between detections (frequent detections) make chunks short, so the
cost per chunk matters as much as the cost per value: the tiers with few blocks share one numpy
pass on a cached flat layout of their pairs, the per-check-time tests of the pairs not cleared
run a few windows at a time (after a change most pairs fail, and the work past the detection is
lost), and the prefix sums are centred on the window mean early in the chunk, so that a change
late in the chunk does not loosen the bounds before it. While the window is short (fewer than
``_DENSE_TIMES`` check times, as after each restart) a dense screen replaces the tiers: the
per-pair test with its rounding margin on every (check time, bucket edge) pair, a block of
check times per handful of numpy calls, on a layout of the pairs cached by check times (a
window restarted empty comes back to the same check times run after run). The exact test in
the batch path computes every pass of river's loop (one per bucket dropped) as one (pass,
edge) matrix, in river's order of operations. Batches of fewer than ``_SMALL_BATCH``
values go through a plain port of river's per-value update, which is the reference for the rest.

Intended differences from river: non-finite values are skipped (river would let a NaN poison
the window); ``width`` is an ``int`` (river returns a float); ``max_buckets`` must be at least 2
(river's Rust core panics on a cut with 1); ``n_detections`` counts every detection (river's
counter lives in the core it rebuilds after each one). ``variance`` is river's: the sum of
squared deviations over the window, not divided by ``width``.

References
----------
A. Bifet and R. Gavaldà (2007). Learning from time-changing data with adaptive windowing.
*Proceedings of the 2007 SIAM International Conference on Data Mining*, 443-448.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from streamwatch.detectors.base import Detection, Detector, FloatArray, SnapshotError, as_values

# River's compiled core (``AdaptiveWindowing``, the Rust half of river's ``ADWIN``) is the fastest
# thing per value while the window is short, as after every restart: a C-level map over it costs
# about half of river's own Python ``update`` loop, where our screen pays per chunk and per
# detection. So each window starts in it (the "short phase") and moves to our path, faster on
# long windows, once it holds ``_RUST_SWITCH`` values; the state we save stays ours.
_AdaptiveWindowing: Any
try:
    from river._river_rust.drift import AdaptiveWindowing as _AdaptiveWindowing
except ImportError:  # pragma: no cover - a river without its compiled core: our path only
    _AdaptiveWindowing = None

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_S = TypeVar("_S", bound=np.generic)

_EPS = float(np.finfo(np.float64).eps)
_TWO_THIRDS = 2.0 / 3.0
_SMALL_BATCH = 48  # fewer finite values than this: the per-value port of river
_FIRST_CHUNK = 1 << 13  # check chunks start here after a restart and double while quiet
_MIN_CHUNK = 1 << 10  # after a detection the first chunk shrinks towards half the last run
_MAX_CHUNK = 1 << 15
_TIER = 4  # a block of 2**k check times bounds the edges with >= _TIER * 2**k * clock newer values
_BANDS = 3  # with clock 1, newer sides shorter than _TIER * 2**_BANDS are bounded time by time
_GRID = 1 << 14  # slots x blocks per numpy pass, to stay in cache
_WINDOW_TIER = 8  # pairs not cleared are resolved 2**8 check times at a time, in order
_REL_MARGIN = 1e-9  # relative slack on the screen's threshold, on top of the rounding bound
_BAND_BATCH = 256  # band rows given the direct test at once (windows in order), about
_CENTRE_AT = 256  # window length at which the screen takes its centre, see _Chunk
_FUSE = 1 << 12  # tiers of at most this many (block, slot) pairs share one numpy pass
_DENSE_PAIRS = 1 << 15  # (slot, check time) pairs per numpy pass of the dense screen
_VEC_CUT = 24  # exact tests in the batch path on at least this many buckets: a pass in numpy
_DENSE_TIMES = 1 << 12  # the dense screen for chunks from windows of fewer check times than this
# values a window spends in river's core before our path (0: never). River's core costs 160-400 ns
# a value at clock 1, growing with the log of the window, ours ~250 on long windows plus its cost
# per chunk and per detection; 2**16 was the fastest on null noise at delta 0.1 (runs of up to 50k
# values between false alarms) and costs quiet streams a few per cent. At clock 32 both cost about the same.
_RUST_SWITCH = 1 << 16
_RUST_PIECE = 1 << 12  # values handed to river's core at once (lists made past a detection are lost)
_BUF_START = 1 << 10  # initial room for the values kept in the short phase (then doubled)

Levels = list[list[float]]
Starts = list[list[int]]
Pyramid = list[tuple[FloatArray, FloatArray, FloatArray]]


def _level_counts(n: int, max_buckets: int) -> list[int]:
    """Buckets per level (level 0 first) of river's bucket list after ``n`` insertions.

    >>> _level_counts(16, 5), _level_counts(98, 5)
    ([4, 4, 1], [4, 5, 5, 4, 2])
    """
    if n <= 0:
        return [0]
    mm = n + max_buckets - 1
    top = (mm // max_buckets).bit_length() - 1
    counts = [max_buckets - 1 + ((mm >> i) & 1) for i in range(top)]
    counts.append((mm >> top) - (max_buckets - 1))
    return counts


def _top_levels(n: IntArray, max_buckets: int) -> IntArray:
    """Index of the top level of the bucket list for each window length in ``n`` (>= 1)."""
    q = (n + (max_buckets - 1)) // max_buckets
    top = np.floor(np.log2(q.astype(np.float64))).astype(np.int64)
    top -= np.left_shift(1, top) > q
    top += np.left_shift(1, top + 1) <= q
    return top


class _SlotTable(NamedTuple):
    """Bucket slots (level, rank) whose edge can lie in a range of distances from the newest end.

    The edge after the ``j``-th bucket (1-based, oldest first) of level ``i`` lies
    ``n1 = cum_i + j * 2**i`` values from the newest end, where ``cum_i``, the length of the
    levels below, is ``(M - 1)(2**i - 1) + (mm mod 2**i)`` with ``mm = n + M - 1``.
    """

    level: IntArray
    rank: IntArray
    base: IntArray  # (M - 1)(2**i - 1) + j * 2**i
    low_mask: IntArray  # 2**i - 1
    need_bit: IntArray  # 1 for rank M (present only when bit i of mm is set), else 0
    max_level: int


@lru_cache(maxsize=256)
def _slot_table(max_buckets: int, lo: int, hi: float, max_level: int) -> _SlotTable:
    """The slots whose edge can lie ``lo <= n1 < hi`` values from the newest end."""
    m = max_buckets
    levels: list[int] = []
    ranks: list[int] = []
    for i in range(max_level + 1):
        size = 1 << i
        low_cum, high_cum = (m - 1) * (size - 1), m * (size - 1)
        if low_cum + size >= hi:
            break
        for j in range(1, m + 1):
            if high_cum + j * size >= lo and low_cum + j * size < hi:
                levels.append(i)
                ranks.append(j)
    lev = np.array(levels, dtype=np.int64)
    rank = np.array(ranks, dtype=np.int64)
    size_arr = np.left_shift(1, lev)
    return _SlotTable(
        level=lev,
        rank=rank,
        base=(m - 1) * (size_arr - 1) + rank * size_arr,
        low_mask=size_arr - 1,
        need_bit=(rank == m).astype(np.int64),
        max_level=max(levels, default=-1),
    )


class _FusedLayout(NamedTuple):
    """Every (block, slot) pair of a set of small tiers, flattened: one entry per pair."""

    tier: IntArray
    block: IntArray
    pyr: IntArray  # index of the block in the tiers' pyramid levels, concatenated in order
    level: IntArray
    rank: IntArray
    base: IntArray
    low_mask: IntArray
    lo: FloatArray
    hi: FloatArray


@lru_cache(maxsize=32)  # entries of up to a few hundred kB
def _fused_layout(
    max_buckets: int, max_top: int, nj: int, specs: tuple[tuple[int, int, float], ...]
) -> _FusedLayout:
    """The pairs of the tiers ``specs`` (``(tier, lo, hi)`` each) over ``nj`` check times.

    The layout depends on the chunk only through these arguments, so it is cached: chunks of
    the same length (the common case) reuse it. The arrays are shared: never modify them.
    """
    parts: list[list[npt.NDArray[Any]]] = [[] for _ in _FusedLayout._fields]
    offset = 0
    for tier, lo, hi in specs:
        tab = _slot_table(max_buckets, lo, hi, max_top)
        nb = -(-nj >> tier)  # blocks of 2**tier check times, the last one maybe partial
        size = nb * tab.level.size
        block = np.tile(np.arange(nb, dtype=np.int64), tab.level.size)
        slot = np.repeat(np.arange(tab.level.size), nb)
        for part, value in zip(
            parts,
            (
                np.full(size, tier, dtype=np.int64),
                block,
                block + offset,
                tab.level[slot],
                tab.rank[slot],
                tab.base[slot],
                tab.low_mask[slot],
                np.full(size, float(lo)),
                np.full(size, hi),
            ),
            strict=True,
        ):
            part.append(value)
        offset += nb
    return _FusedLayout(*(np.concatenate(part) for part in parts))


def _slots(mm: IntArray, top: IntArray, tab: _SlotTable, max_buckets: int) -> tuple[IntArray, BoolArray]:
    """Distance from the newest end of each slot's edge, and whether the slot holds a bucket.

    ``mm`` is ``n + max_buckets - 1`` and ``top`` the top level for each window length ``n``;
    the result has one row per slot and one column per window length (numpy's inner loops
    then run along the long axis).
    """
    lev = tab.level[:, None]
    n1: IntArray = tab.base[:, None] + (mm & tab.low_mask[:, None])
    bit = (mm >> lev) & 1
    if int(top.min()) > tab.max_level:  # every slot level below the top: M - 1 + bit buckets
        present: BoolArray = bit >= tab.need_bit[:, None]
        return n1, present
    m = max_buckets
    at_top = (mm >> top) - (m - 1)
    count = np.where(lev < top, m - 1 + bit, np.where(lev == top, at_top, 0))
    present = tab.rank[:, None] <= count
    return n1, present


def _is_edge(n: IntArray, b: IntArray, max_buckets: int) -> BoolArray:
    """Whether position ``b`` (0 < b < n) starts a bucket of the window of length ``n``.

    Element ``b`` lies ``n1 = n - b`` values from the newest end, in level ``i`` where
    ``cum_i < n1 <= cum_{i+1}`` (``cum_i``: length of the levels below ``i``). It starts a
    bucket when ``b`` is a multiple of ``2**i``, buckets being aligned on the window start.
    As ``(M - 1)(2**i - 1) <= cum_i <= M (2**i - 1)``, only a few levels need testing.
    """
    m = max_buckets
    if not n.size:
        return np.zeros(0, dtype=bool)
    mm = n + (m - 1)
    top = _top_levels(n, m)
    n1 = n - b
    if m >= 2:
        base = np.floor(np.log2((n1 + m) / m)).astype(np.int64) - 2
        np.maximum(base, 0, out=base)
        tries = 6
    else:  # a binary counter: levels do not follow from n1
        base = np.zeros(n.shape, dtype=np.int64)
        tries = int(top.max()) + 1
    lev = np.full(n.shape, -1, dtype=np.int64)
    for d in range(tries):
        i = base + d
        span = np.left_shift(2, i) - 1
        end = np.where(i < top, (m - 1) * span + (mm & span), n)  # cum_{i+1}
        hit = (lev < 0) & (n1 <= end) & (i <= top)
        lev[hit] = i[hit]
    out: BoolArray = (lev >= 0) & ((b & (np.left_shift(1, lev) - 1)) == 0)
    return out


def _pair_reduce(x: FloatArray, op: np.ufunc) -> FloatArray:
    """``op`` over consecutive pairs (an odd last element pairs with itself)."""
    if x.size % 2:
        x = np.append(x, x[-1])
    out: FloatArray = op(x[0::2], x[1::2])
    return out


def _expand(b: IntArray, start: IntArray, tier: IntArray, limit: int) -> tuple[IntArray, IntArray, IntArray]:
    """Edge ``b[i]`` at each of the ``2**tier[i]`` check times (or windows) from ``start[i]``
    below ``limit``: the edges, the times and the index ``i`` of each pair."""
    width = np.left_shift(1, tier)
    total = int(width.sum())
    owner = np.repeat(np.arange(b.size), width)
    t = start[owner] + (np.arange(total, dtype=np.int64) - (np.cumsum(width) - width)[owner])
    keep = t < limit
    return b[owner[keep]], t[keep], owner[keep]


def _phase_view(x: npt.NDArray[_S], per: int) -> npt.NDArray[_S]:
    """Per-block values (blocks in order) as a ``(phase, 1, group)`` view, ``per`` phases."""
    return x.reshape(-1, per).T[:, None, :]


def _cut_pass(
    tot: Levels, width: int, total: float, variance: float, delta: float, min_len: int
) -> tuple[float, float] | None:
    """One pass of river's change test: the first edge (oldest first) that cuts the window.

    Returns the ``|mean difference|`` and the bound there, or None when no edge cuts.
    """
    lmin = float(min_len)
    w = float(width)
    s2 = variance / w
    dp = math.nan
    n0, n1, u0, u1 = 0.0, w, 0.0, total
    for idx in range(len(tot) - 1, -1, -1):
        size = float(1 << idx)
        level = tot[idx]
        last = len(level) - 1
        for k, t in enumerate(level):
            n0 += size
            n1 -= size
            u0 += t
            u1 -= t
            if idx == 0 and k == last:
                break
            if n1 >= lmin and n0 >= lmin:
                if math.isnan(dp):  # first evaluation in this pass; width >= 2 here
                    dp = math.log(2.0 * math.log(w) / delta)
                dm = u0 / n0 - u1 / n1
                m = 1.0 / (n0 - lmin + 1.0) + 1.0 / (n1 - lmin + 1.0)
                arg = 2.0 * m * s2 * dp
                eps = (math.sqrt(arg) if arg >= 0.0 else math.nan) + _TWO_THIRDS * dp * m
                if abs(dm) > eps:
                    return abs(dm), eps
    return None


def _drop_oldest(
    tot: Levels, var: Levels, pos: Starts, width: int, total: float, variance: float
) -> tuple[int, float, float]:
    """Delete the oldest bucket, as river's ``delete_element``: the new width, total, variance."""
    top = len(tot) - 1
    nb = float(1 << top)
    u, v = tot[top][0], var[top][0]
    mu = u / nb
    width -= 1 << top
    wf = float(width)
    total -= u
    mu_window = total / wf
    variance -= v + nb * wf * (mu - mu_window) * (mu - mu_window) / (nb + wf)
    del tot[top][0], var[top][0], pos[top][0]
    if not tot[top]:
        tot.pop()
        var.pop()
        pos.pop()
    return width, total, variance


def _cut_window(
    tot: Levels,
    var: Levels,
    pos: Starts,
    width: int,
    total: float,
    variance: float,
    delta: float,
    min_len: int,
) -> tuple[int, float, float, float, float] | None:
    """River's change test on a bucket list; drops the oldest bucket while some edge cuts.

    ``tot``/``var``/``pos`` are per level (level 0 first), each oldest bucket first. Returns
    None when nothing cuts (nothing is changed), else the window's width, total and variance
    after the cuts, and the ``|mean difference|`` and bound of the first cut.
    """
    first = _cut_pass(tot, width, total, variance, delta, min_len)
    if first is None:
        return None
    cut: tuple[float, float] | None = first
    while cut is not None:
        width, total, variance = _drop_oldest(tot, var, pos, width, total, variance)
        cut = _cut_pass(tot, width, total, variance, delta, min_len)
    return width, total, variance, first[0], first[1]


def _cut_window_vec(
    tot: Levels,
    var: Levels,
    pos: Starts,
    width: int,
    total: float,
    variance: float,
    delta: float,
    min_len: int,
) -> tuple[int, float, float, float, float] | None:
    """:func:`_cut_window` with all its passes as one (pass, edge) matrix, in numpy.

    Pass ``p`` runs on the window without its ``p`` oldest buckets, and the width, total and
    variance it starts from follow from those buckets alone, so every pass is computed at once
    and the first that finds no cut ends the loop. Bit for bit the same: the sums run in the
    same order (``np.cumsum`` and ``np.subtract.accumulate`` are sequential), the sizes are exact
    integers, the logarithms are ``math.log``'s and the rest are IEEE elementwise operations in
    river's order. For the batch path, where the passes in Python cost more than the calls.
    """
    lmin = float(min_len)
    order = range(len(tot) - 1, -1, -1)
    flat = np.array([t for i in order for t in tot[i]], dtype=np.float64)
    fvar = np.array([v for i in order for v in var[i]], dtype=np.float64)
    size = np.array([float(1 << i) for i in order for _ in tot[i]], dtype=np.float64)
    nb = flat.size
    if nb < 2:
        return None
    # the window before pass p (p oldest buckets dropped), p = 0 .. nb - 1
    widths = np.subtract.accumulate(np.concatenate(((float(width),), size[:-1])))
    totals = np.subtract.accumulate(np.concatenate(((total,), flat[:-1])))
    wf = widths[1:]
    mu = flat[:-1] / size[:-1]
    mw = totals[1:] / wf
    d = mu - mw
    inc = fvar[:-1] + size[:-1] * wf * d * d / (size[:-1] + wf)
    variances = np.subtract.accumulate(np.concatenate(((variance,), inc)))
    # pass p, edge j: after bucket p + j of the flat list (all but the newest bucket)
    k = nb - 1
    idx = np.arange(nb)[:, None] + np.arange(k)[None, :]
    inside = idx < k
    np.minimum(idx, k - 1, out=idx)
    seg = flat[idx]
    u0 = np.cumsum(np.concatenate((np.zeros((nb, 1)), seg), axis=1), axis=1)[:, 1:]
    u1 = np.subtract.accumulate(np.concatenate((totals[:, None], seg), axis=1), axis=1)[:, 1:]
    ends = np.cumsum(size)
    n0 = ends[idx] - np.concatenate(((0.0,), ends[:-1]))[:, None]
    w = widths[:, None]
    n1 = w - n0
    inside &= (n1 >= lmin) & (n0 >= lmin)
    s2 = variances / widths
    dp = np.array([math.log(2.0 * math.log(x) / delta) if x > 1.0 else math.nan for x in widths.tolist()])
    dm = np.abs(u0 / n0 - u1 / n1)
    m = 1.0 / (n0 - lmin + 1.0) + 1.0 / (n1 - lmin + 1.0)
    eps = np.sqrt(2.0 * m * s2[:, None] * dp[:, None]) + (_TWO_THIRDS * dp)[:, None] * m
    cut = inside & (dm > eps)
    rows = cut.any(axis=1)
    if not rows[0]:
        return None
    drops = int(np.argmin(rows))  # the first pass without a cut (the last one has no edge)
    j = int(np.argmax(cut[0]))
    for _ in range(drops):  # delete the oldest buckets, as river's delete_element
        top = len(tot) - 1
        del tot[top][0], var[top][0], pos[top][0]
        if not tot[top]:
            tot.pop()
            var.pop()
            pos.pop()
    return (
        int(widths[drops]),
        float(totals[drops]),
        float(variances[drops]),
        float(dm[0, j]),
        float(eps[0, j]),
    )


class _DenseBlock(NamedTuple):
    """The (slot, check time) pairs of check times ``t0`` to ``t1`` of a fresh window."""

    t0: int
    t1: int
    b: IntArray  # older side's length (0 where ``present`` is False)
    present: BoolArray  # an edge with both sides of at least ``min_window_length`` values
    g: FloatArray  # 1/n0 + 1/n1
    inv1: FloatArray  # 1/n1
    m: FloatArray  # 1/(n0 - l + 1) + 1/(n1 - l + 1)


class _DenseGeometry(NamedTuple):
    """What the dense screen needs of check times ``first + clock * i`` besides the values."""

    a0: FloatArray  # the threshold's factors, as in _Chunk
    b0: FloatArray
    tolf: FloatArray  # 4 eps (n + 300): times the sum of |x| gives the rounding margin
    blocks: tuple[_DenseBlock, ...]


@lru_cache(maxsize=8)  # entries of up to 30 bytes per pair
def _dense_geometry(
    max_buckets: int, min_len: int, delta: float, first: int, clock: int, nj: int
) -> _DenseGeometry:
    """The pairs and threshold factors of ``nj`` check times from window length ``first``.

    A window restarts empty after each detection, so the same check times come back run after
    run: cached. The arrays are shared: never modify them.
    """
    ns = first + clock * np.arange(nj, dtype=np.int64)
    nf = ns.astype(np.float64)
    shrink = 1.0 - _REL_MARGIN
    dp = np.log(2.0 * np.log(nf) / delta)
    top = _top_levels(ns, max_buckets)
    mm = ns + (max_buckets - 1)
    tab = _slot_table(max_buckets, min_len, math.inf, int(top[-1]))
    c1 = min_len - 1.0
    blocks: list[_DenseBlock] = []
    step = max(1, _DENSE_PAIRS // max(1, tab.level.size))
    with np.errstate(all="ignore"):  # pairs that are no edge divide by zero; masked
        for t0 in range(0, nj if tab.level.size else 0, step):
            t1 = min(nj, t0 + step)
            n1, present = _slots(mm[t0:t1], top[t0:t1], tab, max_buckets)
            b = ns[t0:t1] - n1
            present &= (n1 >= min_len) & (b >= min_len)
            rows = present.any(axis=1)
            n1, b, present = n1[rows], np.where(present[rows], b[rows], 0), present[rows]
            n0f, n1f = b.astype(np.float64), n1.astype(np.float64)
            m = 1.0 / (n0f - c1) + 1.0 / (n1f - c1)
            inv1 = 1.0 / n1f
            blocks.append(_DenseBlock(t0, t1, b, present, 1.0 / n0f + inv1, inv1, m))
    return _DenseGeometry(
        a0=(2.0 * shrink * shrink) * dp,
        b0=(_TWO_THIRDS * shrink) * dp,
        tolf=(4.0 * _EPS) * (nf + 300.0),
        blocks=tuple(blocks),
    )


def _dense_fresh(
    geo: _DenseGeometry,
    first: int,
    clock: int,
    nj: int,
    totals: FloatArray,
    variances: FloatArray,
    abs_totals: FloatArray,
) -> Iterator[int]:
    """:meth:`_Chunk.dense` for a window that started empty with this run (``n_old == 0``):
    the window's sums at length ``n`` are ``totals[n]``, ... and the geometry is cached."""
    at = slice(first, first + clock * nj, clock)
    sn = totals[at]
    a = variances[at] / (first + clock * np.arange(nj, dtype=np.float64))
    a *= geo.a0
    tol = abs_totals[at] * geo.tolf
    for blk in geo.blocks:
        t0, t1 = blk.t0, blk.t1
        # pb/n0 - (S - pb)/n1 as pb (1/n0 + 1/n1) - S/n1: a few roundings more, far inside
        # the margin (which allows for n + 300 of them)
        dm = totals[blk.b]
        dm *= blk.g
        dm -= sn[t0:t1] * blk.inv1
        np.abs(dm, out=dm)
        eps = a[t0:t1] * blk.m
        np.sqrt(eps, out=eps)
        eps += geo.b0[t0:t1] * blk.m
        dm += tol[t0:t1] * blk.g
        hit = np.flatnonzero((blk.present > (dm < eps)).any(axis=0))
        if hit.size:
            yield from (hit + t0).tolist()


class _Chunk:
    """The screen of one chunk of check times: which of them may hold a cut.

    ``ns`` are the window lengths at the check times; ``totals``, ``variances`` and
    ``abs_totals`` hold the window's running sums (index ``n - n_old`` for length ``n``) since
    the run started with ``n_old`` values in the window; ``old_edges``/``old_prefix`` are the
    bucket edges of that window and the sums up to them.
    """

    def __init__(
        self,
        det: ADWIN,
        ns: IntArray,
        n_old: int,
        totals: FloatArray,
        variances: FloatArray,
        abs_totals: FloatArray,
        old_edges: IntArray,
        old_prefix: FloatArray,
    ) -> None:
        self.mb, self.lmin, self.clock = det.max_buckets, det.min_window_length, det.clock
        self.ns = ns
        self.nj = int(ns.size)
        self.n_old = n_old
        self.totals = totals
        self.old_edges = old_edges
        self.old_prefix = old_prefix
        it = ns - n_old
        self.nf = ns.astype(np.float64)
        self.sn = totals[it]
        self.an = abs_totals[it]
        self.mm = ns + (self.mb - 1)
        self.top = _top_levels(ns, self.mb)
        self.max_top = int(self.top[-1])
        # centre of the prefix sums Q = S - cc n: the window mean early in the chunk (once it
        # holds _CENTRE_AT values), so that a change late in the chunk does not loosen the
        # bounds before it, where the first detection is looked for
        tc = int(np.searchsorted(ns, min(max(int(ns[0]), _CENTRE_AT), int(ns[-1]))))
        self.cc = float(self.sn[tc] / self.nf[tc])
        shrink = 1.0 - _REL_MARGIN  # the threshold factors carry the relative margin
        self.s2 = variances[it] / self.nf
        self.dp = np.log(2.0 * np.log(self.nf) / det.delta)
        self.mu = self.sn / self.nf
        self.m0 = 1.0 / (self.nf - (self.lmin - 1.0))  # 1/(n0 - l + 1) >= this, as n0 < n
        self.a0 = (2.0 * shrink * shrink) * self.dp
        self.b0 = (_TWO_THIRDS * shrink) * self.dp
        self.q = self.sn - self.cc * self.nf
        # per tier: block max and min of q, block min of s2 (blocks of 2**tier check times)
        self.pyramid: Pyramid = [(self.q, self.q, self.s2)]

    # -----------------------------------------------------------------------------------------
    # the screen

    def candidates(self) -> Iterator[int]:
        """Check times (indices into ``ns``) at which some edge may cut, in order.

        Lazy: the caller stops at the first detection, and the work after it is skipped.
        """
        lmin, clock = self.lmin, self.clock
        nj, nmax = self.nj, int(self.ns[-1])
        rows: IntArray = np.zeros(0, dtype=np.int64)  # check times the bands did not clear
        first_tier = 0
        band_hi = _TIER << _BANDS
        if clock == 1 and nj >= 2 << _BANDS:
            first_tier = _BANDS
            rows = self._bands(band_hi)
        groups: list[tuple[IntArray, IntArray, IntArray]] = []  # (tier, block, edge) not cleared
        small: list[tuple[int, int, float]] = []  # tiers left to one pass: numpy calls cost more
        tier = 0
        while True:
            kb = 1 << tier
            hk = _TIER * kb * clock
            if tier:
                if hk >= nmax:
                    break
                qmax, qmin, smin = self.pyramid[-1]
                self.pyramid.append(
                    (
                        _pair_reduce(qmax, np.maximum),
                        _pair_reduce(qmin, np.minimum),
                        _pair_reduce(smin, np.minimum),
                    )
                )
            final = kb >= nj
            lo = lmin if tier == 0 else max(lmin, hk - (kb - 1) * clock)
            hi = math.inf if final else float(2 * hk)
            tab = _slot_table(self.mb, lo, hi, self.max_top)
            if tier >= first_tier and tab.level.size:
                if (-(-nj >> tier)) * tab.level.size <= _FUSE:
                    small.append((tier, lo, hi))
                else:
                    groups.extend(
                        (np.full(r.size, tier, dtype=np.int64), r, b)
                        for r, b in self._tier_fails(tier, tab, lo, hi)
                    )
            if final:
                break
            tier += 1
        if small:
            groups.append(self._fused_fails(tuple(small)))
        yield from self._resolve(rows, band_hi, groups)

    def _bands(self, band_hi: int) -> IntArray:
        """Check times (clock 1) at which some edge with a newer side shorter than ``band_hi``
        may cut: the others are cleared by a bound per band of newer-side lengths.

        For a newer side of ``n1`` values in ``[lo, hi)``, with ``Q_p = S_p - cc p``, its mean
        is within ``max |Q_n - Q_p| / lo + |cc - mean|`` of the window mean (``p`` over the
        possible starts, a sliding range of ``Q``), and ``|mean0 - mean1|`` is that times
        ``n / n0 <= n / (n - hi + 1)``; ``m`` is at least ``1/(n - l + 1) + 1/(hi - l)``. Check
        times whose possible starts are not all in this run's batch are not cleared.
        """
        ns, n_old, cc = self.ns, self.n_old, self.cc
        c1 = self.lmin - 1.0
        first = max(int(ns[0]) - (band_hi - 1), n_old, 1)  # first position with a known Q
        pos = np.arange(first, int(ns[-1]) + 1, dtype=np.int64)
        fail = np.zeros(self.nj, dtype=bool)
        qpos = self.totals[pos - n_old] - cc * pos.astype(np.float64)
        q_hi, q_lo = [qpos], [qpos]  # sliding max / min over 2**k positions
        drift = np.abs(cc - self.mu)
        tol = 16.0 * (self.nf + 300.0) * _EPS * (self.an + abs(cc) * self.nf)
        a = self.a0 * self.s2
        for band in range(_BANDS):
            lo, hi = (self.lmin if band == 0 else max(self.lmin, _TIER << band)), _TIER << (band + 1)
            if lo >= hi or not _slot_table(self.mb, lo, float(hi), self.max_top).level.size:
                continue
            w = hi - lo  # possible starts: n - hi + 1 .. n - lo
            t0 = int(np.searchsorted(ns - (hi - 1), first))  # first check time with all of them
            fail[:t0] = True
            if t0 >= self.nj:
                continue
            while 2 << (len(q_hi) - 1) <= w:
                span = 1 << (len(q_hi) - 1)
                q_hi.append(np.maximum(q_hi[-1][:-span], q_hi[-1][span:]))
                q_lo.append(np.minimum(q_lo[-1][:-span], q_lo[-1][span:]))
            k = w.bit_length() - 1
            extra = w - (1 << k)
            hi_q, lo_q = q_hi[k], q_lo[k]
            if extra:
                hi_q = np.maximum(hi_q[:-extra], hi_q[extra:])
                lo_q = np.minimum(lo_q[:-extra], lo_q[extra:])
            i0 = int(ns[t0]) - (hi - 1) - first
            hi_q, lo_q = hi_q[i0 : i0 + self.nj - t0], lo_q[i0 : i0 + self.nj - t0]
            qn, nf = self.q[t0:], self.nf[t0:]
            dev = np.maximum(qn - lo_q, hi_q - qn)
            dev *= 1.0 / lo
            dev += drift[t0:]
            dev *= nf / (nf - (hi - 1))
            dev += tol[t0:] / lo
            m = self.m0[t0:] + 1.0 / (hi - 1 - c1)
            eps = np.sqrt(a[t0:] * m)
            eps += self.b0[t0:] * m
            fail[t0:] |= ~(dev < eps)
        return np.flatnonzero(fail)

    def _resolve(
        self, rows: IntArray, band_hi: int, groups: list[tuple[IntArray, IntArray, IntArray]]
    ) -> Iterator[int]:
        """Test what the bounds did not clear, 2**_WINDOW_TIER check times at a time, in order.

        ``rows``: check times whose band edges (newer side shorter than ``band_hi``) get the
        direct test; ``groups``: edges not cleared over blocks, tested at each check time of
        the block where they are an edge. Blocks longer than a window are first bounded again
        over each window they cover. The tests per window are the costly part; they stop with
        the caller at the first detection.
        """
        w = _WINDOW_TIER
        nj = self.nj
        empty = np.zeros(0, dtype=np.int64)
        band_tab = _slot_table(self.mb, self.lmin, float(band_hi), self.max_top)
        g_tier, g_block, g_b = (
            (np.concatenate([g[i] for g in groups]) for i in range(3)) if groups else (empty, empty, empty)
        )
        # blocks within a window: each of their check times
        low = g_tier <= w
        low_tier, low_b = g_tier[low], g_b[low]
        low_start = g_block[low] << low_tier
        # longer blocks: bound each window they cover again, at once
        high = ~low
        high_b, high_win = empty, empty
        if high.any():
            cover = g_tier[high] - w  # 2**cover windows
            first = g_block[high] << cover
            high_b, high_win, _ = _expand(g_b[high], first, cover, ((nj - 1) >> w) + 1)
            fail = self._bound_fail(high_b, high_win, w)
            high_b, high_win = high_b[fail], high_win[fail]
        # everything by window, so that a window's share is a slice
        order = np.argsort(low_start, kind="stable")
        low_start, low_tier, low_b = low_start[order], low_tier[order], low_b[order]
        order = np.argsort(high_win, kind="stable")
        high_win, high_b = high_win[order], high_b[order]
        wins = np.unique(np.concatenate((rows >> w, low_start >> w, high_win)))
        low_at = np.searchsorted(low_start, np.concatenate((wins, wins[-1:] + 1)) << w).tolist()
        high_at = np.searchsorted(high_win, np.concatenate((wins, wins[-1:] + 1))).tolist()
        # band rows get the direct test a few windows at a time, in order, by about
        # _BAND_BATCH rows: after a change most of them fail, and the work past the first
        # detection is never used
        cuts = [*np.searchsorted(rows, wins << w).tolist(), rows.size]
        wins_l = wins.tolist()
        i = 0
        while i < len(wins_l):
            j = i + 1
            while j < len(wins_l) and cuts[j] - cuts[i] < _BAND_BATCH:
                j += 1
            sub = rows[cuts[i] : cuts[j]]
            fails = (
                [r for r, _ in self._tier_generic(0, band_tab, self.lmin, float(band_hi), sub)]
                if sub.size
                else []
            )
            band_t = np.unique(np.concatenate(fails)) if fails else empty
            # band_t holds times of these windows only: a window's share ends where the next begins
            ats = [win << w for win in wins_l[i:j]]
            bounds = [*np.searchsorted(band_t, ats).tolist(), band_t.size]
            for k in range(i, j):
                at = ats[k - i]
                lo_i, hi_i = bounds[k - i], bounds[k - i + 1]
                a, b = low_at[k], low_at[k + 1]
                c, d = high_at[k], high_at[k + 1]
                if a == b and c == d:  # band rows only: already tested one by one
                    yield from band_t[lo_i:hi_i].tolist()
                    continue
                flags = np.zeros(1 << w, dtype=bool)  # check times of the window that may cut
                flags[band_t[lo_i:hi_i] - at] = True
                starts = np.concatenate((low_start[a:b], np.full(d - c, at, dtype=np.int64)))
                tiers = np.concatenate((low_tier[a:b], np.full(d - c, w, dtype=np.int64)))
                lb, lt, _ = _expand(np.concatenate((low_b[a:b], high_b[c:d])), starts, tiers, nj)
                flags[self._leaf_flags(lb, lt) - at] = True
                yield from (np.flatnonzero(flags) + at).tolist()
            i = j

    def dense(self) -> Iterator[int]:
        """:meth:`candidates` for a short window: every (check time, bucket edge) pair at once.

        The test of :meth:`_leaf_flags` (river's, on prefix sums, with its rounding margin) over
        the whole (slot, check time) matrix, ``_DENSE_PAIRS`` pairs at a time and in order, so
        that little is computed past a detection. About twenty numpy calls per block of check
        times, where the tiered screen takes a few hundred per chunk: the cheaper path while the
        window (hence the number of its edges) is short, as it is after each detection.
        """
        tab = _slot_table(self.mb, self.lmin, math.inf, self.max_top)
        if not tab.level.size:
            return
        lmin, c1 = self.lmin, self.lmin - 1.0
        step = max(1, _DENSE_PAIRS // tab.level.size)
        tol = (4.0 * _EPS) * (self.nf + 300.0) * self.an
        a = self.a0 * self.s2
        for t0 in range(0, self.nj, step):
            t1 = min(self.nj, t0 + step)
            n1, present = _slots(self.mm[t0:t1], self.top[t0:t1], tab, self.mb)
            b = self.ns[t0:t1] - n1
            present &= n1 >= lmin
            present &= b >= lmin
            pb = self.prefix_where(b, present)
            n0f = b.astype(np.float64)
            n1f = n1.astype(np.float64)
            dm = pb / n0f
            dm -= (self.sn[t0:t1] - pb) / n1f
            np.abs(dm, out=dm)
            m = 1.0 / (n0f - c1)
            m += 1.0 / (n1f - c1)
            eps = a[t0:t1] * m
            np.sqrt(eps, out=eps)
            m *= self.b0[t0:t1]
            eps += m
            np.divide(1.0, n0f, out=n0f)
            np.divide(1.0, n1f, out=n1f)
            n0f += n1f
            n0f *= tol[t0:t1]
            dm += n0f
            hit = np.flatnonzero((present > (dm < eps)).any(axis=0))
            if hit.size:
                yield from (hit + t0).tolist()

    # -----------------------------------------------------------------------------------------
    # bounds over blocks of check times

    def _tier_fails(
        self, tier: int, tab: _SlotTable, lo: int, hi: float
    ) -> Iterator[tuple[IntArray, IntArray]]:
        """(blocks, edges) of one tier that the bound does not clear, in cache-sized slices.

        Once the block starts have the slots' levels below their top level and every edge in
        range is past the old part of the window, the slot layout repeats with the low bits of
        the window length: it is computed for one period of blocks and broadcast, with per-block
        values as strided views and no division per edge (the common case). Elsewhere the layout
        is computed block by block, see :meth:`_tier_generic`.
        """
        lmin, clock, ns = self.lmin, self.clock, self.ns
        kb = 1 << tier
        nb, nb_full = -(-self.nj // kb), self.nj // kb
        starts = np.arange(0, self.nj, kb, dtype=np.int64)
        step = kb * clock  # window growth from one block start to the next
        period_len = 2 << tab.max_level
        per = period_len // math.gcd(period_len, step)
        first, groups = nb, 0
        if math.isfinite(hi) and nb_full:
            ok = (
                (self.top[starts] > tab.max_level)
                & (ns[starts] - lmin >= hi)
                & (ns[starts] - hi >= self.n_old)
            )
            if ok[nb_full - 1]:
                first = int(np.argmax(ok))
                groups = (nb_full - first) // per
                if groups < 2:
                    first, groups = nb, 0
        yield from self._tier_generic(tier, tab, lo, hi, np.arange(first, dtype=np.int64))
        if groups:
            yield from self._tier_periodic(tier, tab, lo, hi, first, groups, per)
        yield from self._tier_generic(tier, tab, lo, hi, np.arange(first + groups * per, nb, dtype=np.int64))

    def _tier_periodic(
        self, tier: int, tab: _SlotTable, lo: int, hi: float, first: int, groups: int, per: int
    ) -> Iterator[tuple[IntArray, IntArray]]:
        """:meth:`_tier_fails` for the full periods of blocks from block ``first`` on.

        The bound is :meth:`_clear`'s with the older side's length bounded per block: the
        statistic is ``|mean1 - mean| n / n0`` with ``n0 >= n - n1max``, and ``m`` at least
        ``1/(n - l + 1) + 1/(n1 + span - l + 1)``, exact ``n0`` only for short windows.
        """
        lmin, cc, ns = self.lmin, self.cc, self.ns
        kb = 1 << tier
        mm_phase = self.mm[first * kb] + kb * self.clock * np.arange(per, dtype=np.int64)
        n1_tab, inside_tab = _slots(mm_phase, np.full(per, tab.max_level + 1), tab, self.mb)
        inside_tab &= (n1_tab >= lo) & (n1_tab < hi)
        keep = inside_tab.any(axis=1)
        # layout (phase, slot, group of blocks): the long axis last
        n1_tab, inside_tab = n1_tab[keep].T[:, :, None], inside_tab[keep].T[:, :, None]
        n1f = n1_tab.astype(np.float64)
        n1max = float(n1f[inside_tab].max())
        inv_n1 = 1.0 / n1f
        span = float((kb - 1) * self.clock)
        # slots out of range may divide by zero; masked
        m_n1 = 1.0 / (n1f + (span - (lmin - 1.0)))
        qmax, qmin, smin = self.pyramid[tier]
        tol_scale = 4.0 * _EPS * (float(lo) / lmin + 1.0)
        g_rows = max(1, _GRID // max(1, per * int(keep.sum())))
        for g0 in range(0, groups, g_rows):
            g1 = min(groups, g0 + g_rows)
            r_lo, r_hi = first + g0 * per, first + g1 * per
            t_lo, t_hi = r_lo << tier, r_hi << tier

            at_start = slice(t_lo, t_hi, kb)  # values at the block starts ...
            at_end = slice(t_lo + kb - 1, t_hi + kb - 1, kb)  # ... and at the block ends
            nsf, nef = _phase_view(self.nf[at_start], per), _phase_view(self.nf[at_end], per)
            ae, mu = _phase_view(self.an[at_end], per), _phase_view(self.mu[at_start], per)
            if tier:
                qs = _phase_view(self.q[at_start], per)
                spread = np.maximum(
                    _phase_view(qmax[r_lo:r_hi], per) - qs, qs - _phase_view(qmin[r_lo:r_hi], per)
                )
                spread += np.abs(cc - mu) * span
                a = _phase_view(self.a0[at_start], per) * _phase_view(smin[r_lo:r_hi], per)
            else:
                spread = np.zeros_like(mu)
                a = _phase_view(self.a0[at_start], per) * _phase_view(self.s2[at_start], per)
            spread += tol_scale * (nef + 300.0) * ae + 8.0 * _EPS * (ae + abs(cc) * nef)
            bidx = (_phase_view(ns[t_lo:t_hi:kb], per) - self.n_old) - n1_tab
            pb = np.take(self.totals, bidx, mode="clip")
            stat = _phase_view(self.sn[at_start], per) - pb
            stat *= inv_n1
            stat -= mu
            np.abs(stat, out=stat)
            if float(nsf.min()) >= 8.0 * n1max:
                # n / n0 <= n / (n - n1max), at most 8/7; 1/(n0 - l + 1) >= 1/(n - l + 1)
                stat *= nsf / (nsf - n1max)
                m = _phase_view(self.m0[at_start], per) + m_n1
            else:  # short window: the exact n0 of each edge
                n0 = nsf - n1f
                stat *= nsf / n0
                m = 1.0 / (n0 - (lmin - 1.0)) + m_n1
            stat += spread * inv_n1
            eps = a * m
            np.sqrt(eps, out=eps)
            m *= _phase_view(self.b0[at_start], per)
            m += eps
            clear = stat < m
            pp, c, gg = np.nonzero(inside_tab > clear)
            if pp.size:
                rr = r_lo + gg * per + pp
                yield rr, ns[rr << tier] - n1_tab[pp, c, 0]

    def _tier_generic(
        self, tier: int, tab: _SlotTable, lo: int, hi: float, blocks: IntArray
    ) -> Iterator[tuple[IntArray, IntArray]]:
        """:meth:`_tier_fails` for the given blocks, laid out block by block (tier 0: the
        direct test at each check time)."""
        lmin, ns = self.lmin, self.ns
        kb = 1 << tier
        rows = max(1, _GRID // tab.level.size)
        for r0 in range(0, blocks.size, rows):
            r = blocks[r0 : r0 + rows]
            rs = r << tier
            re = np.minimum(rs + kb, self.nj) - 1
            n1, inside = _slots(self.mm[rs], self.top[rs], tab, self.mb)  # (slot, block)
            inside &= n1 >= np.maximum(lo, ns[rs] - ns[re] + lmin)
            inside &= n1 < np.minimum(hi, ns[rs] - lmin + 1)
            b = ns[rs] - n1
            clear = self._clear(tier, r, n1.astype(np.float64), self.prefix_where(b, inside), float(lo))
            c, rr = np.nonzero(inside > clear)
            if rr.size:
                yield r[rr], b[c, rr]

    def _fused_fails(self, specs: tuple[tuple[int, int, float], ...]) -> tuple[IntArray, IntArray, IntArray]:
        """(tiers, blocks, edges) that the bound does not clear, for the tiers ``specs``.

        :meth:`_tier_generic` for several small tiers at once, on a cached flat layout of
        their pairs: with few blocks per tier, a pass per tier costs its numpy calls and not
        its arithmetic, which made short runs between detections slow.
        """
        lay = _fused_layout(self.mb, self.max_top, self.nj, specs)
        m, ns, lmin = self.mb, self.ns, self.lmin
        rs = lay.block << lay.tier
        re = np.minimum(rs + np.left_shift(1, lay.tier), self.nj) - 1
        mm, top, nsr = self.mm[rs], self.top[rs], ns[rs]
        n1 = lay.base + (mm & lay.low_mask)
        count = np.where(
            lay.level < top,
            (m - 1) + ((mm >> lay.level) & 1),
            np.where(lay.level == top, (mm >> top) - (m - 1), 0),
        )
        inside = lay.rank <= count
        inside &= n1 >= np.maximum(lay.lo, nsr - ns[re] + lmin)
        inside &= n1 < np.minimum(lay.hi, nsr - lmin + 1)
        keep = np.flatnonzero(inside)
        if not keep.size:
            return keep, keep, keep
        rs, re, n1, pyr = rs[keep], re[keep], n1[keep], lay.pyr[keep]
        b = nsr[keep] - n1
        levels = [self.pyramid[t] for t, _, _ in specs]
        qmax, qmin, smin = (np.concatenate([lev[i] for lev in levels])[pyr] for i in range(3))
        pb = self.prefix_where(b, np.ones(b.shape, dtype=bool))
        clear = self._clear_at(rs, re, qmax, qmin, smin, n1.astype(np.float64), pb, lay.lo[keep])
        fail = keep[~clear]
        return lay.tier[fail], lay.block[fail], b[~clear]

    def _bound_fail(self, b: IntArray, r: IntArray, tier: int) -> BoolArray:
        """Whether edge ``b[i]`` may cut at some check time of block ``r[i]``."""
        rs = r << tier
        re = np.minimum(rs + (1 << tier), self.nj) - 1
        inside = (b >= self.lmin) & (self.ns[re] - b >= self.lmin)
        n1 = (self.ns[rs] - b).astype(np.float64)
        fail: BoolArray = inside > self._clear(tier, r, n1, self.prefix_where(b, inside), 1.0)
        return fail

    def _clear(self, tier: int, r: IntArray, n1f: FloatArray, pb: FloatArray, n1lo: float) -> BoolArray:
        """Whether no check time of block ``r`` (``2**tier`` times) can cut at the edge whose
        newer side holds ``n1f`` values and older side sums to ``pb`` at the block start.

        ``r`` broadcasts against ``n1f`` and ``pb``; ``n1lo`` is a lower bound of ``n1f``.
        Centred on the window mean at the block start, the newer side's sum moves by at most
        ``spread`` (the range of ``Q`` over the block, plus the drift of the centre) over the
        block, so ``|mean0 - mean1|`` stays below its value at the start plus
        ``spread / n1``; the threshold is lowest at the end of the block (``m``), the start
        (``delta'``) and the smallest window variance of the block. A margin covers rounding.
        """
        rs = r << tier
        re = np.minimum(rs + (1 << tier), self.nj) - 1
        qmax, qmin, smin = self.pyramid[tier]
        return self._clear_at(rs, re, qmax[r], qmin[r], smin[r], n1f, pb, n1lo)

    def _clear_at(
        self,
        rs: IntArray,
        re: IntArray,
        qmax: FloatArray,
        qmin: FloatArray,
        smin: FloatArray,
        n1f: FloatArray,
        pb: FloatArray,
        n1lo: float | FloatArray,
    ) -> BoolArray:
        """:meth:`_clear` for blocks from check time ``rs`` to ``re``, with the block's max and
        min of ``Q`` and min of the window variance."""
        lmin, cc = self.lmin, self.cc
        c1 = lmin - 1.0
        nsf, nef, sn, qs, ae = self.nf[rs], self.nf[re], self.sn[rs], self.q[rs], self.an[re]
        spread = np.maximum(qmax - qs, qs - qmin) + np.abs(cc - self.mu[rs]) * (nef - nsf)
        spread += 4.0 * (nef + 300.0) * _EPS * ae * (n1lo / lmin + 1.0) + 8.0 * _EPS * (ae + abs(cc) * nef)
        inv = 1.0 / n1f
        n0 = nsf - n1f
        mean1 = sn - pb
        mean1 *= inv
        stat = np.divide(pb, n0)
        stat -= mean1
        np.abs(stat, out=stat)
        inv *= spread
        stat += inv
        m = 1.0 / (n0 - c1)
        np.subtract(nef - c1, n0, out=n0)
        np.divide(1.0, n0, out=n0)
        m += n0
        np.multiply(self.a0[rs] * smin, m, out=n0)
        np.sqrt(n0, out=n0)
        m *= self.b0[rs]
        m += n0
        clear: BoolArray = stat < m
        return clear

    # -----------------------------------------------------------------------------------------
    # single pairs

    def _leaf_flags(self, b: IntArray, t: IntArray) -> IntArray:
        """Check times among ``t`` at which ``b`` is a bucket edge that may cut."""
        n = self.ns[t]
        keep = (n - b >= self.lmin) & (b >= self.lmin)  # both sides long enough to be tested
        old = b < self.n_old  # the sums up to old positions are known at old edges only
        if old.any():
            keep[old] &= _is_edge(n[old], b[old], self.mb)
        t, b = t[keep], b[keep]
        if not t.size:
            return t
        nf = self.nf[t]
        n0 = b.astype(np.float64)
        n1 = nf - n0
        pb = self.prefix_where(b, np.ones(b.shape, dtype=bool))
        c1 = self.lmin - 1.0
        dm = np.abs(pb / n0 - (self.sn[t] - pb) / n1)
        m = 1.0 / (n0 - c1) + 1.0 / (n1 - c1)
        eps = np.sqrt(self.a0[t] * self.s2[t] * m) + self.b0[t] * m
        dm += 4.0 * (nf + 300.0) * _EPS * self.an[t] * (1.0 / n0 + 1.0 / n1)
        clear = dm < eps
        t, b = t[~clear], b[~clear]  # the test first, as it is cheaper: then only edges count
        new = b >= self.n_old
        if new.any():
            edge = ~new
            edge[new] = _is_edge(self.ns[t[new]], b[new], self.mb)
            t = t[edge]
        out: IntArray = t
        return out

    def prefix_where(self, b: IntArray, valid: BoolArray) -> FloatArray:
        """Sum of the first ``b`` values of the window (to rounding) where ``valid``, anything
        elsewhere (without index errors)."""
        j = np.where(valid, b - self.n_old, 0)
        old = j < 0
        if not old.any():
            out: FloatArray = self.totals[j]
            return out
        j[old] = 0
        out = self.totals[j]
        out[old] = self.old_prefix[np.searchsorted(self.old_edges, b[old])]
        return out


class ADWIN(Detector):
    """ADWIN change detector for the mean of a stream, equivalent to ``river.drift.ADWIN``.

    Parameters
    ----------
    delta
        Significance value of the cut test, in ``(0, 1)``; smaller is more conservative.
    clock
        Test for a change every ``clock`` values (1: after every value).
    max_buckets
        Buckets of each size kept before the two oldest merge (river's ``max_buckets``).
    min_window_length
        Both sub-windows must hold at least this many values to be compared (>= 1).
    grace_period
        No test until the window holds more than this many values.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> det = ADWIN()
    >>> [(d.at, d.start) for d in det.update(stream)]  # river's ADWIN() fires at 1023 too
    [(1023, 992)]
    >>> det.width, round(det.estimation, 4)  # restarted after 1023, like river: 976 values
    (976, 5.4672)
    >>> det = ADWIN(clock=1)  # tested after every value; batches split anywhere
    >>> [d.at for d in det.update(stream[:1500])] + [d.at for d in det.update(stream[1500:])]
    [1002]
    >>> Detector.restore(det.snapshot()).to_dict() == det.to_dict()
    True
    """

    name: ClassVar[str] = "adwin"
    version: ClassVar[int] = 1

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        super().__init__()
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        for label, value, low in (
            ("clock", clock, 1),
            ("max_buckets", max_buckets, 2),
            ("min_window_length", min_window_length, 1),
            ("grace_period", grace_period, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        self.delta = float(delta)
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self.n_detections = 0
        self._buf_y: FloatArray = np.empty(_BUF_START)  # river's core's values (short phase)
        self._buf_pos: IntArray = np.empty(_BUF_START, dtype=np.int64)
        self._reset_window()
        self._pending_reset = False
        # speed only, never results: runs between detections predict the next one, and a
        # chunk screened past a detection is wasted work
        self._first_chunk = _FIRST_CHUNK

    # -----------------------------------------------------------------------------------------
    # public state

    @property
    def width(self) -> int:
        """Number of values in the window."""
        return self._buf_n if self._helper is not None else self._width

    @property
    def total(self) -> float:
        """Sum of the values in the window."""
        if self._helper is not None:  # river's sum, the same additions in the same order
            return float(self._helper.get_total())
        return self._total

    @property
    def estimation(self) -> float:
        """Mean of the window (0 when it is empty)."""
        width = self.width
        return self.total / width if width else 0.0

    @property
    def variance(self) -> float:
        """River's ``variance``: the sum of squared deviations from the mean over the window."""
        if self._helper is not None:
            return float(self._helper.get_variance())
        return self._variance

    def _reset_window(self) -> None:
        self._width = 0
        self._total = 0.0
        self._variance = 0.0
        self._abs_total = 0.0  # sum of |x| over the window: scales the screen's rounding margin
        self._tot: Levels = [[]]
        self._var: Levels = [[]]
        self._pos: Starts = [[]]
        self._pending_reset = False
        # the short phase: river's core tests the values, which are kept (with their positions)
        # until a detection or the switch to our path; the fields above wait for the switch
        self._switch = _RUST_SWITCH
        self._helper: Any = None
        if _AdaptiveWindowing is not None and self._switch > 0:
            self._helper = _AdaptiveWindowing(
                delta=self.delta,
                clock=self.clock,
                max_buckets=self.max_buckets,
                min_window_length=self.min_window_length,
                grace_period=self.grace_period,
            )
        self._buf_n = 0  # the kept values and positions are the first _buf_n of _buf_y, _buf_pos

    def _after_drift(self, width: int, total: float, variance: float) -> None:
        self._width, self._total, self._variance = width, total, variance
        self._abs_total = 0.0
        self._tot, self._var, self._pos = [[]], [[]], [[]]
        self._pending_reset = True
        self.n_detections += 1

    # -----------------------------------------------------------------------------------------
    # updates

    def update(self, values: npt.ArrayLike) -> list[Detection]:
        """Feed a batch in stream order; return the detections it caused, in order."""
        x = as_values(values)
        base = self.n_seen
        self.n_seen += int(x.size)
        finite = np.isfinite(x)
        if finite.all():
            y = x
            pos = np.arange(base, base + x.size, dtype=np.int64)
        else:
            where = np.flatnonzero(finite).astype(np.int64)
            y = x[where]
            pos = where + base
        if y.size < _SMALL_BATCH:  # the per-value port only: no numpy arithmetic
            return self._update_finite(y, pos)
        # the screen divides by zero and overflows where its results are masked or unused (and
        # river's sums overflow as river's do): one error state for the whole batch, as
        # entering one per numpy call costs more than the call on short runs
        with np.errstate(all="ignore"):
            return self._update_finite(y, pos)

    def _update_finite(self, y: FloatArray, pos: IntArray) -> list[Detection]:
        """:meth:`update` for the finite values ``y`` at stream positions ``pos``."""
        out: list[Detection] = []
        i, k = 0, int(y.size)
        while i < k:
            if self._pending_reset:
                self._reset_window()
            if self._helper is not None:
                used, found_short = self._feed_short(y, pos, i)
                i += used
                out += found_short
                continue
            if k - i < _SMALL_BATCH:
                for value, p in zip(y[i:].tolist(), pos[i:].tolist(), strict=True):
                    i += 1
                    found = self._step(value, p)
                    if found is not None:  # the next value restarts the window, maybe short
                        out.append(found)
                        break
                continue
            used, found = self._run(y[i:], pos[i:])
            i += used
            if found is not None:
                out.append(found)
        return out

    def _step(self, x: float, p: int) -> Detection | None:
        """One value, as river's ``AdaptiveWindowing.update`` (insert, compress, test), on a
        window our path holds (not after a detection: the caller restarts the window)."""
        tot, var, pos = self._tot, self._var, self._pos
        tot[0].append(x)
        var[0].append(0.0)
        pos[0].append(p)
        w = self._width + 1
        self._width = w
        inc = 0.0
        if w > 1:
            dv = x - self._total / (w - 1)
            inc = (w - 1) * dv * dv / w
        self._variance += inc
        self._total += x
        self._abs_total += abs(x)
        m = self.max_buckets
        i = 0
        while len(tot[i]) == m + 1:
            n1 = float(1 << i)
            t0, t1 = tot[i][0], tot[i][1]
            d = t0 / n1 - t1 / n1
            v12 = var[i][0] + var[i][1] + n1 * 0.5 * d * d
            if i + 1 == len(tot):
                tot.append([])
                var.append([])
                pos.append([])
            tot[i + 1].append(t0 + t1)
            var[i + 1].append(v12)
            pos[i + 1].append(pos[i][0])
            del tot[i][:2], var[i][:2], pos[i][:2]
            if len(tot[i + 1]) <= m:
                break
            i += 1
        if w % self.clock or w <= self.grace_period:
            return None
        res = _cut_window(tot, var, pos, w, self._total, self._variance, self.delta, self.min_window_length)
        if res is None:
            return None
        start = pos[-1][0]
        self._after_drift(res[0], res[1], res[2])
        return Detection(at=p, start=start, statistic=res[3], threshold=res[4])

    # -----------------------------------------------------------------------------------------
    # the short phase: river's compiled core

    def _feed_short(self, y: FloatArray, pos: IntArray, i: int) -> tuple[int, list[Detection]]:
        """Values from ``y[i]`` to river's core until a detection, the switch length or the end.

        The core tests every value as river's ``ADWIN`` does; ``map`` is lazy, so it stops right
        after the value that detects. The values are kept with their positions, for our cut
        test on a detection and for the move to our path. Returns the values consumed and the
        detections.
        """
        j = min(int(y.size), i + _RUST_PIECE, i + self._switch - self._buf_n)
        tested = map(self._helper.update, y[i:j].tolist())
        hit = next(itertools.compress(itertools.count(), tested), None)
        used = j - i if hit is None else hit + 1
        n, end = self._buf_n, self._buf_n + used
        if end > self._buf_y.size:  # grow by doubling: amortised, and no list of pieces
            size = max(end, 2 * self._buf_y.size)
            self._buf_y = np.concatenate((self._buf_y[:n], np.empty(size - n)))
            self._buf_pos = np.concatenate((self._buf_pos[:n], np.empty(size - n, dtype=np.int64)))
        self._buf_y[n:end] = y[i : i + used]
        self._buf_pos[n:end] = pos[i : i + used]
        self._buf_n = end
        if hit is not None:
            return used, self._short_detection()
        if end >= self._switch:
            self._leave_short()
        return used, []

    def _short_state(self) -> tuple[tuple[Levels, Levels, Starts], int, float, float, float]:
        """The window of the short phase in our form, from the kept values: the bucket list,
        width, total, variance and sum of ``|x|``, as our path would hold them."""
        n = self._buf_n
        if not n:
            return ([[]], [[]], [[]]), 0, 0.0, 0.0, 0.0
        y, pos = self._buf_y[:n], self._buf_pos[:n]
        totals, variances, abs_totals = np.zeros(n + 1), np.zeros(n + 1), np.zeros(n + 1)
        with np.errstate(all="ignore"):  # sums overflow as river's do
            self._extend(y, 0, n, 0, totals, variances, abs_totals)
            levels = self._build(n, 0, {}, y, pos)
        return levels, n, float(totals[n]), float(variances[n]), float(abs_totals[n])

    def _short_detection(self) -> list[Detection]:
        """River's core detected on the last kept value: our cut test on the same window.

        River's cut drops the oldest bucket while the window cuts, and its window after the cut
        tells how many it dropped. So of the passes of our test only the first (the statistic
        and bound) and the last (no cut) run here, the drops in between by river's formula on
        our buckets: the window after the cut is ours, and a disagreement replays the values.
        """
        (tot, var, pos), n, total, variance, _ = self._short_state()
        delta, lmin = self.delta, self.min_window_length
        first = _cut_pass(tot, n, total, variance, delta, lmin)
        kept = int(self._helper.get_width())
        width = n
        while first is not None and width - (1 << (len(tot) - 1)) >= max(kept, 1):
            width, total, variance = _drop_oldest(tot, var, pos, width, total, variance)
        if first is None or width != kept or _cut_pass(tot, width, total, variance, delta, lmin) is not None:
            return self._replay()  # never seen: our own path decides, from the window's start
        at = int(self._buf_pos[n - 1])
        self._helper, self._buf_n = None, 0
        self._after_drift(width, total, variance)
        return [Detection(at=at, start=pos[-1][0], statistic=first[0], threshold=first[1])]

    def _leave_short(self) -> None:
        """Move the window to our path (river's core has tested every value so far)."""
        levels, n, total, variance, abs_total = self._short_state()
        self._tot, self._var, self._pos = levels
        self._width, self._total, self._variance, self._abs_total = n, total, variance, abs_total
        self._helper, self._buf_n = None, 0
        # the window may grow long before the next restart: do not hold its values meanwhile
        self._buf_y, self._buf_pos = np.empty(_BUF_START), np.empty(_BUF_START, dtype=np.int64)

    def _replay(self) -> list[Detection]:
        """The kept values again through our path alone, from the empty window."""
        n = self._buf_n
        y, pos = self._buf_y[:n].copy(), self._buf_pos[:n].copy()  # a restart reuses the buffers
        self._helper, self._buf_n = None, 0
        with np.errstate(all="ignore"):
            return self._update_finite(y, pos)

    # -----------------------------------------------------------------------------------------
    # our path

    def _run(self, y: FloatArray, pos: IntArray) -> tuple[int, Detection | None]:
        """Values ``y`` (finite) from the current window until the first detection or the end.

        Returns how many values were consumed and the detection, if any.
        """
        k = int(y.size)
        n_old = self._width
        old = self._old_buckets()
        sizes = np.array([1 << e[0] for e in old], dtype=np.int64)
        old_edges = np.cumsum(sizes)
        old_prefix = np.cumsum(np.array([e[2] for e in old], dtype=np.float64))
        old_map = {e[1]: e for e in old}
        totals = np.empty(k + 1)
        variances = np.empty(k + 1)
        abs_totals = np.empty(k + 1)
        totals[0], variances[0], abs_totals[0] = self._total, self._variance, self._abs_total
        clock, grace = self.clock, self.grace_period
        done, chunk = 0, self._first_chunk
        while done < k:
            dense = n_old + done < _DENSE_TIMES * clock
            hi = min(k, done + chunk)
            self._extend(y, done, hi, n_old, totals, variances, abs_totals)
            first = max(n_old + done + 1, grace + 1)
            first = -(-first // clock) * clock
            if first <= n_old + hi:
                ns = np.arange(first, n_old + hi + 1, clock, dtype=np.int64)
                if dense and not n_old:
                    f0, nj = int(ns[0]), int(ns.size)
                    geo = _dense_geometry(self.max_buckets, self.min_window_length, self.delta, f0, clock, nj)
                    cands = _dense_fresh(geo, f0, clock, nj, totals, variances, abs_totals)
                else:
                    screen = _Chunk(self, ns, n_old, totals, variances, abs_totals, old_edges, old_prefix)
                    cands = screen.dense() if dense else screen.candidates()
                for t in cands:
                    n = int(ns[t])
                    j = n - n_old
                    levels = self._build(n, n_old, old_map, y, pos)
                    cut = _cut_window_vec if sum(map(len, levels[0])) >= _VEC_CUT else _cut_window
                    res = cut(
                        *levels, n, float(totals[j]), float(variances[j]), self.delta, self.min_window_length
                    )
                    if res is not None:
                        run = 1 << (max(n // 2, 1).bit_length() - 1)
                        self._first_chunk = min(_FIRST_CHUNK, max(_MIN_CHUNK, run))
                        start = levels[2][-1][0]
                        self._after_drift(res[0], res[1], res[2])
                        found = Detection(at=int(pos[j - 1]), start=start, statistic=res[3], threshold=res[4])
                        return j, found
            done = hi
            chunk = min(2 * chunk, _MAX_CHUNK)
            self._first_chunk = _FIRST_CHUNK if done >= _FIRST_CHUNK else self._first_chunk
        self._tot, self._var, self._pos = self._build(n_old + k, n_old, old_map, y, pos)
        self._width = n_old + k
        self._total = float(totals[k])
        self._variance = float(variances[k])
        self._abs_total = float(abs_totals[k])
        return k, None

    def _old_buckets(self) -> list[tuple[int, int, float, float, int]]:
        """(level, offset in the window, total, variance, start) of each bucket, oldest first."""
        out: list[tuple[int, int, float, float, int]] = []
        offset = 0
        for lev in range(len(self._tot) - 1, -1, -1):
            for t, v, s in zip(self._tot[lev], self._var[lev], self._pos[lev], strict=True):
                out.append((lev, offset, t, v, s))
                offset += 1 << lev
        return out

    @staticmethod
    def _extend(
        y: FloatArray,
        lo: int,
        hi: int,
        n_old: int,
        totals: FloatArray,
        variances: FloatArray,
        abs_totals: FloatArray,
    ) -> None:
        """Running total, variance and |x| sum after each of ``y[lo:hi]``, as river's sums.

        ``np.cumsum`` adds in order, so the totals are river's ``total += x`` bit for bit and
        the variance, a sum of per-value increments, is too.
        """
        seg = y[lo:hi]
        w = np.arange(n_old + lo + 1, n_old + hi + 1, dtype=np.float64)
        wm1 = w - 1.0
        # values near the float range overflow, as in river (under update's error state)
        totals[lo + 1 : hi + 1] = seg
        np.cumsum(totals[lo : hi + 1], out=totals[lo : hi + 1])
        abs_totals[lo + 1 : hi + 1] = np.abs(seg)
        np.cumsum(abs_totals[lo : hi + 1], out=abs_totals[lo : hi + 1])
        dv = seg - totals[lo:hi] / wm1
        inc = wm1 * dv * dv / w
        if n_old + lo == 0:
            inc[0] = 0.0
        variances[lo + 1 : hi + 1] = inc
        np.cumsum(variances[lo : hi + 1], out=variances[lo : hi + 1])

    # -----------------------------------------------------------------------------------------
    # exact bucket lists

    def _build(
        self,
        n: int,
        n_old: int,
        old_map: dict[int, tuple[int, int, float, float, int]],
        y: FloatArray,
        pos: IntArray,
    ) -> tuple[Levels, Levels, Starts]:
        """River's bucket list after the window grew from ``n_old`` to ``n`` values with ``y``.

        Buckets are aligned blocks of ``2**level`` values; their totals and variances are the
        pairwise merges river does, in the same order: old buckets as they are, blocks of new
        values from a merge pyramid, blocks across the two from their halves.
        """
        counts = _level_counts(n, self.max_buckets)
        top = len(counts) - 1
        # merge pyramid of the new values: level j holds the aligned blocks of 2**j new values
        ptot: list[FloatArray] = [y[: n - n_old]]
        pvar: list[FloatArray] = [np.zeros(n - n_old)]
        q0 = [n_old]
        for j in range(1, top + 1):
            first = -(-n_old >> j)
            cnt = (n >> j) - first
            if cnt <= 0:
                break
            s = 2 * first - q0[-1]
            tl, tr = ptot[-1][s : s + 2 * cnt : 2], ptot[-1][s + 1 : s + 2 * cnt : 2]
            vl, vr = pvar[-1][s : s + 2 * cnt : 2], pvar[-1][s + 1 : s + 2 * cnt : 2]
            h = float(1 << (j - 1))
            # sums near the float range overflow, as in river (under update's error state)
            d = tl / h - tr / h
            ptot.append(tl + tr)
            pvar.append(vl + vr + h * 0.5 * d * d)
            q0.append(first)

        tot: Levels = [[] for _ in counts]
        var: Levels = [[] for _ in counts]
        starts: Starts = [[] for _ in counts]
        if not n_old:  # every bucket a block of the pyramid: a slice of each level
            p = 0
            for i in range(top, -1, -1):
                c, size = counts[i], 1 << i
                tot[i] = ptot[i][p >> i : (p >> i) + c].tolist()
                var[i] = pvar[i][p >> i : (p >> i) + c].tolist()
                starts[i] = pos[p : p + c * size : size].tolist()
                p += c * size
            return tot, var, starts

        def block(p: int, i: int) -> tuple[float, float, int]:
            if p >= n_old:
                idx = (p >> i) - q0[i]
                return float(ptot[i][idx]), float(pvar[i][idx]), int(pos[p - n_old])
            e = old_map[p]
            if e[0] == i:
                return e[2], e[3], e[4]
            half = 1 << (i - 1)
            t0, v0, s0 = block(p, i - 1)
            t1, v1, _ = block(p + half, i - 1)
            h = float(half)
            d = t0 / h - t1 / h
            return t0 + t1, v0 + v1 + h * 0.5 * d * d, s0

        p = 0
        for i in range(top, -1, -1):
            for _ in range(counts[i]):
                t, v, s = block(p, i)
                tot[i].append(t)
                var[i].append(v)
                starts[i].append(s)
                p += 1 << i
        return tot, var, starts

    # -----------------------------------------------------------------------------------------
    # state

    def to_dict(self) -> dict[str, Any]:
        tot, var, pos = self._tot, self._var, self._pos
        width, total, variance, abs_total = self._width, self._total, self._variance, self._abs_total
        if self._helper is not None:  # the short phase: the state our path would hold
            (tot, var, pos), width, total, variance, abs_total = self._short_state()
        return {
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
            "n_seen": self.n_seen,
            "n_detections": self.n_detections,
            "pending_reset": self._pending_reset,
            "width": width,
            "total": _enc(total),
            "variance": _enc(variance),
            "abs_total": _enc(abs_total),
            "bucket_totals": [[_enc(v) for v in level] for level in tot],
            "bucket_variances": [[_enc(v) for v in level] for level in var],
            "bucket_starts": [list(level) for level in pos],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ADWIN:
        try:
            det = cls(
                delta=d["delta"],
                clock=d["clock"],
                max_buckets=d["max_buckets"],
                min_window_length=d["min_window_length"],
                grace_period=d["grace_period"],
            )
            det.n_seen = _int(d["n_seen"])
            det.n_detections = _int(d["n_detections"])
            det._pending_reset = bool(d["pending_reset"])
            det._width = _int(d["width"])
            det._total = _float(d["total"])
            det._variance = _float(d["variance"])
            det._abs_total = _float(d["abs_total"])
            det._tot = [[_float(v) for v in level] for level in d["bucket_totals"]]
            det._var = [[_float(v) for v in level] for level in d["bucket_variances"]]
            det._pos = [[_int(v) for v in level] for level in d["bucket_starts"]]
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"bad adwin state: {e}") from None
        shape = [len(level) for level in det._tot]
        if shape != [len(level) for level in det._var] or shape != [len(level) for level in det._pos]:
            raise SnapshotError("bad adwin state: bucket lists of different shapes")
        if not det._pending_reset and shape != _level_counts(det._width, det.max_buckets):
            raise SnapshotError("bad adwin state: bucket layout does not match the window width")
        if det._width or det._pending_reset:  # our path holds the window (its values are gone)
            det._helper = None
        return det


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _enc(v: float) -> float | str:
    """A float for JSON: non-finite ones (sums that overflowed) as strings."""
    return v if math.isfinite(v) else str(v)


def _float(v: Any) -> float:
    if v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)
