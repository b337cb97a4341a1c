"""Times, durations and numbers in words, the way the report says them.

>>> after(4 * 60_000 + 10_000)
'4 min'
>>> found_after(1_000_000, 1_000_000 - 250)
'found 0.25 s after it began'
>>> when(1_798_761_600_000)
'2027-01-01 00:00:00 UTC'
"""

from __future__ import annotations

import math
from datetime import UTC, datetime


def when(epoch_ms: int | None) -> str:
    """An event time as ``YYYY-MM-DD HH:MM:SS UTC`` (milliseconds shown only when not zero)."""
    if epoch_ms is None:
        return "unknown"
    t = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    ms = int(epoch_ms) % 1000
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{ms:03d}" if ms else "") + " UTC"


def after(ms: float) -> str:
    """A duration in the largest unit that keeps it readable: ``0.25 s``, ``4 min``, ``2 h 5 min``."""
    s = max(0.0, ms / 1000)
    if s < 1:
        return f"{s:.2f} s"
    if s < 10:
        return f"{s:.1f} s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h" + (f" {m} min" if m else "")
    return f"{s / 86400:.1f} days"


def found_after(detected_ms: int, began_ms: int | None) -> str:
    """How long a change ran before it was found: ``found 4 min after it began``."""
    if began_ms is None:
        return "start not estimated"
    if detected_ms <= began_ms:
        return "found as it began"
    return f"found {after(detected_ms - began_ms)} after it began"


def number(v: float | None, digits: int = 3) -> str:
    """A statistic for a table: ``-`` when unknown, else ``digits`` significant figures."""
    if v is None or not math.isfinite(v):
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 10 ** (digits + 2) or abs(v) < 10 ** -(digits + 1):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:,.0f}"


def percent(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.0%}" if v >= 0.1 or v == 0 else f"{v:.1%}"


__all__ = ["after", "found_after", "number", "percent", "when"]
