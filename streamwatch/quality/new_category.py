"""New categories: values of a categorical feature never seen in the reference.

A :class:`NewCategoryTracker` holds the reference vocabulary of one feature and counts, over
the current window (from the last :meth:`~NewCategoryTracker.reset`: windows are the
caller's), the values outside it. At most ``max_tracked`` distinct new values are counted by
name; the events of further new values are counted together as ``overflow``, so a cardinality
bomb (ids, free text) costs bounded memory.

A reference sample rarely sees every value of a long-tailed feature, so production shows
values it never saw even when nothing changed: their expected share is the reference's
*missing mass*. Good-Turing estimates it by ``N1 / m`` (``N1`` values seen exactly once among
``m``); :func:`missing_mass_bound` adds ``z`` standard errors (Esty 1983: variance
``N1 + 2 N2 - N1^2 / m`` over ``m^2``, ``N2`` the values seen twice) for an upper confidence
bound ``M+``. A window is *significant* when its count of new values is implausible for a
``Binomial(n, M+)`` at the check's ``alpha`` (its false-alarm level per window); a reference
without singletons or doubletons (a closed vocabulary such as gender) has ``M+ = 0``, and any
new value is then significant.

An alert needs a significant window and a new value that *matters*: its count reaches
``min_count`` and its share of the window's non-null values ``min_share`` (3 and 0.5 % by
default: a new value at 2 % share of a closed vocabulary is named within 500 events), or a
cardinality explosion: ``explosion_distinct`` (50) distinct new values, or more than can be
tracked, that together make up ``explosion_share`` (5 %) of the window. The state is plain
JSON (:meth:`~NewCategoryTracker.to_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

SNAPSHOT_FORMAT = "streamwatch.new_category"
SNAPSHOT_VERSION = 2  # v2: reference_doubletons; v1 snapshots restore (see from_dict)
# standard errors added to the Good-Turing missing mass: a one-sided 1e-4 normal bound
MASS_Z = 3.719


def missing_mass_bound(reference_count: int | None, singletons: int, doubletons: int) -> float:
    """Upper confidence bound on the share of production values a reference of
    ``reference_count`` non-null values never saw, from its values seen once and twice.

    Good-Turing's ``N1 / m`` plus ``MASS_Z`` standard errors (Esty's variance estimate
    ``N1 + 2 N2 - N1^2 / m`` over ``m^2``); 0 without a reference count or without singletons
    and doubletons.

    Examples
    --------
    >>> missing_mass_bound(1000, 0, 0), round(missing_mass_bound(1000, 4, 2), 5)
    (0.0, 0.01451)
    """
    m = reference_count or 0
    if m <= 0:
        return 0.0
    n1, n2 = singletons, doubletons
    var = max(n1 + 2.0 * n2 - n1 * n1 / m, 0.0)
    return min(1.0, (n1 + MASS_Z * math.sqrt(var)) / m)


def significant_count(total: int, mass: float, alpha: float) -> int:
    """Smallest count of new values among ``total`` non-null values that a ``Binomial(total,
    mass)`` reaches with probability below ``alpha`` (1 when ``mass`` is 0).

    Examples
    --------
    >>> significant_count(500, 0.0, 1e-6), significant_count(500, 0.002, 1e-6)
    (1, 10)
    """
    if mass <= 0.0 or total <= 0:
        return 1
    if mass >= 1.0:
        return total + 1
    k = int(stats.binom.isf(alpha, total, mass)) + 1
    # isf is a float search: settle the exact smallest k with P(X >= k) < alpha
    while k > 1 and stats.binom.sf(k - 2, total, mass) < alpha:
        k -= 1
    while k <= total and stats.binom.sf(k - 1, total, mass) >= alpha:
        k += 1
    return k


@dataclass(frozen=True, slots=True)
class NewCategoryResult:
    """Evidence of new values in the current window of one feature."""

    detected: bool
    feature: int
    values: dict[str, int]  # new values that matter, with their counts (most frequent first)
    new_count: int  # events with any new value (tracked or overflow)
    total: int  # non-null values in the window
    distinct_new: int  # distinct new values seen (a lower bound once tracking overflowed)
    overflow: int  # events whose new value was beyond the tracking cap
    exploded: bool  # cardinality explosion
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """Share of the window's non-null values that are new."""
        return self.new_count / self.total if self.total else 0.0

    def message(self, feature_names: str | Sequence[str], since: str | None = None) -> str:
        """One human sentence for the alert.

        Examples
        --------
        >>> r = NewCategoryResult(True, 0, {"diverse": 12}, 12, 500, 1, 0, False)
        >>> r.message("gender", since="10:42")
        "gender has a value never seen in the reference since 10:42: 'diverse' (12 of 500 events, 2.4%)"
        """
        name = feature_names if isinstance(feature_names, str) else feature_names[self.feature]
        when = f" since {since}" if since else ""
        if self.exploded:
            return (
                f"{name} exploded in cardinality{when}: {self.distinct_new}"
                f"{'+' if self.overflow else ''} values never seen in the reference "
                f"in {self.new_count} of {self.total} events ({self.share:.1%})"
            )
        if not self.values:
            return f"{name} has no new values that matter"
        shown = ", ".join(
            f"{v!r} ({c} of {self.total} events, {c / self.total:.1%})"
            for v, c in list(self.values.items())[:5]
        )
        more = f" and {len(self.values) - 5} more" if len(self.values) > 5 else ""
        plural = "values" if len(self.values) > 1 else "a value"
        return f"{name} has {plural} never seen in the reference{when}: {shown}{more}"


class NewCategoryTracker:
    """Counts values outside a reference vocabulary over a window of one categorical feature.

    Parameters
    ----------
    vocabulary
        Values seen in the reference (the profile's ``vocabulary``).
    feature
        Index of the feature, carried into results for ``message``.
    max_tracked
        Distinct new values counted by name; more go to ``overflow``.
    min_count, min_share
        A new value matters from this count and this share of the window's non-null values.
    reference_count, reference_singletons, reference_doubletons, alpha
        Non-null values behind the vocabulary and how many of its values were seen once and
        twice (the profile's ``valid``, ``singletons`` and ``doubletons``): they bound the share
        of new values clean data shows (:func:`missing_mass_bound`); ``alpha`` is the
        false-alarm level of the window's test against it.
    explosion_distinct, explosion_share
        A cardinality explosion: this many distinct new values (or more than ``max_tracked``)
        making up at least this share of the window.

    Examples
    --------
    >>> t = NewCategoryTracker(["F", "M"], min_count=3, min_share=0.01)
    >>> t.update(["F", "M", "X", None, "X", "F", "X", "Y"])
    >>> r = t.result()
    >>> r.detected, r.values, r.new_count, r.total
    (True, {'X': 3}, 4, 7)
    >>> NewCategoryTracker.from_dict(t.to_dict()).result() == r
    True
    """

    def __init__(
        self,
        vocabulary: Iterable[str],
        *,
        feature: int = 0,
        max_tracked: int = 100,
        min_count: int = 3,
        min_share: float = 0.005,
        explosion_distinct: int = 50,
        explosion_share: float = 0.05,
        reference_count: int | None = None,
        reference_singletons: int = 0,
        reference_doubletons: int = 0,
        alpha: float = 1e-6,
    ) -> None:
        self.vocabulary = frozenset(vocabulary)
        self.feature = feature
        self.max_tracked = max_tracked
        self.min_count = min_count
        self.min_share = min_share
        self.explosion_distinct = explosion_distinct
        self.explosion_share = explosion_share
        self.reference_count = reference_count
        self.reference_singletons = reference_singletons
        self.reference_doubletons = reference_doubletons
        self.alpha = alpha
        self.expected_share = missing_mass_bound(reference_count, reference_singletons, reference_doubletons)
        self._significant: dict[int, int] = {}  # non-null values -> significant_count
        self.counts: dict[str, int] = {}
        self.overflow = 0
        self.total = 0

    def reset(self) -> None:
        """Start a new window."""
        self.counts = {}
        self.overflow = 0
        self.total = 0

    def update(self, values: Sequence[Any] | npt.NDArray[Any]) -> None:
        """Count a batch of values; ``None`` (missing) is skipped."""
        arr = np.asarray(values, dtype=object).ravel()
        arr = arr[arr != None]  # noqa: E711 - elementwise comparison with None
        if not len(arr):
            return
        self.total += len(arr)
        uniq, cnt = np.unique(arr.astype(str), return_counts=True)
        for v, c in zip(uniq.tolist(), cnt.tolist(), strict=True):
            if v in self.vocabulary:
                continue
            if v in self.counts:
                self.counts[v] += c
            elif len(self.counts) < self.max_tracked:
                self.counts[v] = c
            else:
                self.overflow += c

    def significant(self, total: int | None = None) -> int:
        """Count of new values that is significant among ``total`` non-null values (default:
        those counted so far): implausible at ``alpha`` when new values come at the reference's
        missing mass (:attr:`expected_share`, :func:`significant_count`).

        Examples
        --------
        >>> t = NewCategoryTracker(["a"], reference_count=1000, reference_singletons=4,
        ...                        reference_doubletons=2)
        >>> round(t.expected_share, 4), t.significant(500)
        (0.0145, 24)
        >>> NewCategoryTracker(["F", "M"], reference_count=1000).significant(500)
        1
        """
        total = self.total if total is None else total
        k = self._significant.get(total)
        if k is None:
            k = self._significant[total] = significant_count(total, self.expected_share, self.alpha)
        return k

    def floor(self, total: int | None = None) -> float:
        """Count of new values in all that an alert needs among ``total`` non-null values
        (default: those counted so far): a significant count that also reaches ``min_count``
        and ``min_share``; with fewer nothing can be raised (see :meth:`result`).

        Examples
        --------
        >>> NewCategoryTracker(["a"], min_count=3, min_share=0.01).floor(1000)
        10.0
        """
        total = self.total if total is None else total
        return max(self.min_count, self.min_share * total, self.significant(total))

    def result(self) -> NewCategoryResult:
        """What the window holds now."""
        new_count = sum(self.counts.values()) + self.overflow
        floor = self.floor()
        significant = new_count >= floor
        ordered = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        one = max(self.min_count, self.min_share * self.total)  # what one new value needs
        matters = {v: c for v, c in ordered if c >= one} if significant else {}
        distinct = len(self.counts) + (1 if self.overflow else 0)
        exploded = (
            (len(self.counts) >= self.explosion_distinct or self.overflow > 0)
            and significant
            and new_count >= self.explosion_share * self.total
        )
        evidence: dict[str, Any] = {
            "new_values": matters,
            "new_count": new_count,
            "total": self.total,
            "share": new_count / self.total if self.total else 0.0,
            "distinct_new": distinct,
            "overflow": self.overflow,
            "cardinality_explosion": exploded,
            "min_count": self.min_count,
            "min_share": self.min_share,
            "expected_share": self.expected_share,
            "significant_count": self.significant(),
            "top_new_values": dict(ordered[:10]),
        }
        return NewCategoryResult(
            bool(matters) or exploded,
            self.feature,
            matters,
            new_count,
            self.total,
            distinct,
            self.overflow,
            exploded,
            evidence,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (the vocabulary sorted)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "vocabulary": sorted(self.vocabulary),
            "feature": self.feature,
            "max_tracked": self.max_tracked,
            "min_count": self.min_count,
            "min_share": self.min_share,
            "explosion_distinct": self.explosion_distinct,
            "explosion_share": self.explosion_share,
            "reference_count": self.reference_count,
            "reference_singletons": self.reference_singletons,
            "reference_doubletons": self.reference_doubletons,
            "alpha": self.alpha,
            "counts": dict(self.counts),
            "overflow": self.overflow,
            "total": self.total,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NewCategoryTracker:
        """Restore :meth:`to_dict`'s state; a v1 snapshot (no doubletons) takes as many
        doubletons as singletons (a tail's values seen twice are about as many or fewer)."""
        if d.get("format") != SNAPSHOT_FORMAT or d.get("version") not in (1, SNAPSHOT_VERSION):
            raise ValueError(
                f"not a {SNAPSHOT_FORMAT} v{SNAPSHOT_VERSION} snapshot: "
                f"format={d.get('format')!r} version={d.get('version')!r}"
            )
        t = cls(
            d["vocabulary"],
            feature=int(d["feature"]),
            max_tracked=int(d["max_tracked"]),
            min_count=int(d["min_count"]),
            min_share=float(d["min_share"]),
            explosion_distinct=int(d["explosion_distinct"]),
            explosion_share=float(d["explosion_share"]),
            reference_count=None if d["reference_count"] is None else int(d["reference_count"]),
            reference_singletons=int(d["reference_singletons"]),
            reference_doubletons=int(d.get("reference_doubletons", d["reference_singletons"])),
            alpha=float(d["alpha"]),
        )
        t.counts = {str(k): int(v) for k, v in d["counts"].items()}
        t.overflow = int(d["overflow"])
        t.total = int(d["total"])
        return t
