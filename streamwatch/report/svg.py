"""Inline SVG charts drawn by hand: no scripts, no fonts or styles from elsewhere.

Each function returns one ``<svg>`` element as text; colours come from CSS classes the page
defines (``s-ref``, ``s-cur``, ``s-score``, ``s-cusum``, ``s-base``, ``s-cov``, ``mark-*``), so
the charts follow the page's style. Every text drawn is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

# nice tick steps of an event-time axis, in milliseconds
_TIME_STEPS = [
    s * 1000
    for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
] + [d * 86400_000 for d in (2, 7, 14, 30, 91, 182, 365)]


@dataclass
class Series:
    """One line of a chart: ``xs`` (event time, ms) against ``ys``; NaN breaks the line."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    css: str
    points: bool = False
    dashed: bool = False
    line: bool = True
    titles: Sequence[str] = field(default_factory=list)  # tooltip of each point (with points)


@dataclass
class Mark:
    """A vertical mark at event time ``x`` (an alert), with its tooltip."""

    x: float
    css: str
    title: str


@dataclass
class Frame:
    """Plot area and the data ranges it maps."""

    width: int
    height: int
    x0: float
    x1: float
    y0: float
    y1: float
    left: int = 56
    right: int = 12
    top: int = 10
    bottom: int = 26

    def x(self, v: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.left + (v - self.x0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        span = self.y1 - self.y0 or 1.0
        return self.height - self.bottom - (v - self.y0) / span * (self.height - self.top - self.bottom)


def _f(v: float) -> str:
    return f"{v:.1f}"


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round values covering ``[lo, hi]``.

    >>> nice_ticks(0, 1)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def time_ticks(lo: float, hi: float, n: int = 6) -> list[tuple[float, str]]:
    """Round event times (UTC) across ``[lo, hi]`` ms with their labels."""
    span = max(hi - lo, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= n), _TIME_STEPS[-1])
    fmt = "%H:%M:%S" if step < 60_000 else "%H:%M" if span < 2 * 86400_000 else "%m-%d %H:%M"
    if step >= 86400_000:
        fmt = "%Y-%m-%d"
    first = math.ceil(lo / step) * step
    return [
        (t, datetime.fromtimestamp(t / 1000, tz=UTC).strftime(fmt))
        for t in range(int(first), int(hi) + 1, int(step))
    ]


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:g}"


def _axes(fr: Frame, y_ticks: Sequence[float], x_ticks: Sequence[tuple[float, str]], y_fmt: str) -> list[str]:
    out = []
    for v in y_ticks:
        y = fr.y(v)
        label = f"{v:.0%}" if y_fmt == "percent" else _tick_label(v)
        out.append(
            f'<line class="grid" x1="{fr.left}" x2="{fr.width - fr.right}" y1="{_f(y)}" y2="{_f(y)}"/>'
            f'<text class="tick" x="{fr.left - 4}" y="{_f(y + 3)}" text-anchor="end">{escape(label)}</text>'
        )
    base = fr.height - fr.bottom
    out.append(f'<line class="axis" x1="{fr.left}" x2="{fr.width - fr.right}" y1="{base}" y2="{base}"/>')
    for t, label in x_ticks:
        x = fr.x(t)
        out.append(
            f'<line class="axis" x1="{_f(x)}" x2="{_f(x)}" y1="{base}" y2="{base + 4}"/>'
            f'<text class="tick" x="{_f(x)}" y="{base + 15}" text-anchor="middle">{escape(label)}</text>'
        )
    return out


def _runs(xs: Sequence[float], ys: Sequence[float]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(xs, ys, strict=True):
        if math.isfinite(y):
            runs[-1].append((x, y))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _open(width: int, height: int, label: str, css: str) -> str:
    return (
        f'<svg class="chart {css}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
    )


def line_chart(
    series: Sequence[Series],
    label: str,
    *,
    width: int = 550,
    height: int = 190,
    hlines: Sequence[tuple[float, str, str]] = (),
    band: tuple[float, float] | None = None,
    marks: Sequence[Mark] = (),
    x_range: tuple[float, float] | None = None,
    y_floor: float | None = 0.0,
    y_fmt: str = "number",
) -> str:
    """Lines over event time, horizontal reference lines ``(y, css, title)``, an optional shaded
    ``band`` (y from, y to) and alert ``marks``."""
    xs = [x for s in series for x, y in zip(s.xs, s.ys, strict=True) if math.isfinite(y)]
    ys = [y for s in series for y in s.ys if math.isfinite(y)] + [h[0] for h in hlines]
    if band is not None:
        ys += list(band)
    xs += [m.x for m in marks]
    if x_range is not None:
        xs += list(x_range)
    if not xs or not ys:
        return (
            _open(width, 40, label, "empty")
            + '<text class="note" x="8" y="24">nothing recorded yet</text></svg>'
        )
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.08 or max(abs(hi), 1.0) * 0.1
    lo = min(lo, y_floor) if y_floor is not None else lo - pad
    ticks = nice_ticks(lo, hi + pad)
    fr = Frame(width, height, min(xs), max(xs), min([lo, *ticks]), max([hi + pad, *ticks]))
    parts = [_open(width, height, label, "line")]
    parts += _axes(fr, ticks, time_ticks(fr.x0, fr.x1), y_fmt)
    if band is not None:
        ya, yb = fr.y(max(band)), fr.y(min(band))
        parts.append(
            f'<rect class="band" x="{fr.left}" y="{_f(ya)}" width="{fr.width - fr.left - fr.right}" '
            f'height="{_f(max(yb - ya, 0.5))}"/>'
        )
    for y, css, title in hlines:
        parts.append(
            f'<line class="{css}" x1="{fr.left}" x2="{fr.width - fr.right}" y1="{_f(fr.y(y))}" '
            f'y2="{_f(fr.y(y))}"><title>{escape(title)}</title></line>'
        )
    for m in marks:
        x = fr.x(m.x)
        parts.append(
            f'<g class="mark {m.css}"><title>{escape(m.title)}</title>'
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{fr.top}" y2="{fr.height - fr.bottom}"/>'
            f'<path d="M{_f(x - 4)},{fr.top} L{_f(x + 4)},{fr.top} L{_f(x)},{fr.top + 6} Z"/></g>'
        )
    for s in series:
        css = f"series {s.css}" + (" dashed" if s.dashed else "")
        for run in _runs(s.xs, s.ys) if s.line else []:
            pts = " ".join(f"{_f(fr.x(x))},{_f(fr.y(y))}" for x, y in run)
            parts.append(f'<polyline class="{css}" points="{pts}"><title>{escape(s.name)}</title></polyline>')
        if s.points:
            titles = list(s.titles) or [s.name] * len(s.xs)
            for x, y, t in zip(s.xs, s.ys, titles, strict=True):
                if math.isfinite(y):
                    parts.append(
                        f'<circle class="{css}" cx="{_f(fr.x(x))}" cy="{_f(fr.y(y))}" r="3">'
                        f"<title>{escape(t)}</title></circle>"
                    )
    parts.append("</svg>")
    return "".join(parts)


def bar_pairs(
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    label: str,
    *,
    width: int = 550,
    height: int = 200,
    names: tuple[str, str] = ("reference", "current window"),
) -> str:
    """Side-by-side bars of two distributions over the same bins (shares, 0-1)."""
    n = len(labels)
    if n == 0:
        return _open(width, 40, label, "empty") + '<text class="note" x="8" y="24">no bins yet</text></svg>'
    top = max([*reference, *current, 0.01])
    ticks = nice_ticks(0.0, top * 1.08)
    bottom = 44 if n > 8 else 30
    fr = Frame(width, height, 0, n, 0.0, max(ticks[-1], top * 1.08), bottom=bottom)
    parts = [_open(width, height, label, "bars")]
    parts += _axes(fr, ticks, [], "percent")
    slot = (fr.width - fr.left - fr.right) / n
    bar = max(1.0, slot * 0.38)
    for i, (name, r, c) in enumerate(zip(labels, reference, current, strict=True)):
        x = fr.left + i * slot + slot / 2
        for dx, v, css, who in ((-bar, r, "s-ref", names[0]), (0.0, c, "s-cur", names[1])):
            y = fr.y(v)
            parts.append(
                f'<rect class="{css}" x="{_f(x + dx)}" y="{_f(y)}" width="{_f(bar)}" '
                f'height="{_f(fr.y(0) - y)}"><title>{escape(f"{name}: {who} {v:.1%}")}</title></rect>'
            )
        short = name if len(name) <= 14 else name[:13] + "…"
        base = fr.height - fr.bottom
        if n > 8:
            parts.append(
                f'<text class="tick" text-anchor="end" transform="translate({_f(x + 3)},{base + 10}) '
                f'rotate(-35)">{escape(short)}</text>'
            )
        else:
            parts.append(
                f'<text class="tick" x="{_f(x)}" y="{base + 14}" text-anchor="middle">{escape(short)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def timeline(
    rows: Sequence[str],
    spans: Sequence[tuple[int, float | None, float | None, float | None, str, str]],
    label: str,
    *,
    width: int = 900,
    x_range: tuple[float, float] | None = None,
) -> str:
    """One lane per row name; each span ``(row, began, detected, resolved, css, title)`` draws the
    estimated start to detection as a thin bar, detection to resolution (or the end) as a thick one."""
    lane = 22
    height = 30 + lane * max(1, len(rows))
    xs = [v for s in spans for v in s[1:4] if v is not None]
    if x_range is not None:
        xs += list(x_range)
    if not xs:
        return _open(width, 40, label, "empty") + '<text class="note" x="8" y="24">no alerts</text></svg>'
    left = min(240, 12 + 7 * max((len(r) for r in rows), default=4))
    fr = Frame(width, height, min(xs), max(xs), 0, 1, left=left, top=4, bottom=22)
    parts = [_open(width, height, label, "timeline")]
    parts += _axes(fr, [], time_ticks(fr.x0, fr.x1, 8), "number")
    for i, name in enumerate(rows):
        y = fr.top + lane * i + lane / 2
        short = name if len(name) <= 30 else name[:29] + "…"
        parts.append(
            f'<text class="lane" x="{left - 6}" y="{_f(y + 4)}" text-anchor="end">{escape(short)}</text>'
            f'<line class="grid" x1="{left}" x2="{width - fr.right}" y1="{_f(y)}" y2="{_f(y)}"/>'
        )
    for row, began, detected, resolved, css, title in spans:
        y = fr.top + lane * row + lane / 2
        g = [f'<g class="span {css}"><title>{escape(title)}</title>']
        if began is not None and detected is not None and began < detected:
            g.append(
                f'<rect class="lead" x="{_f(fr.x(began))}" y="{_f(y - 2)}" '
                f'width="{_f(max(fr.x(detected) - fr.x(began), 1))}" height="4"/>'
            )
        if detected is not None:
            end = resolved if resolved is not None else fr.x1
            g.append(
                f'<rect class="active" x="{_f(fr.x(detected))}" y="{_f(y - 6)}" '
                f'width="{_f(max(fr.x(end) - fr.x(detected), 2))}" height="12"/>'
                f'<circle class="hit" cx="{_f(fr.x(detected))}" cy="{_f(y)}" r="4"/>'
            )
        g.append("</g>")
        parts.append("".join(g))
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["Mark", "Series", "bar_pairs", "line_chart", "nice_ticks", "time_ticks", "timeline"]
