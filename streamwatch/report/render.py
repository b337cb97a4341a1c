"""The report as one self-contained HTML page: inline CSS and SVG, nothing fetched from anywhere.

:func:`render` turns a :class:`~streamwatch.report.sources.ReportInput` into text. Per model:

* **monitored** - features and their detectors, outputs, performance, quality checks, the alert
  kinds it can raise and the false-alarm budget, with the status of each now;
* **distributions** - per feature the reference histogram against the current window's, over the
  monitor's own bins (reference quantile bins, or categories);
* **drift over time** - per feature the window statistic and the CUSUM, each over its threshold
  (so both alarm at 1), from the monitor's bounded history (:mod:`streamwatch.history`);
* **performance over time** - per judged metric the value of each prediction-time window against
  the baseline and its tolerance, and the windows' label coverage;
* **alerts** - a timeline and the list, with change start and detection in words.

Model ids, feature names, category values and alert texts come from other teams' events and
configs: every one of them passes :func:`html.escape` before it reaches the page. The page
declares a Content-Security-Policy that forbids loading anything, so it stays offline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

import numpy as np

from streamwatch import __version__
from streamwatch.events import parse_timestamp
from streamwatch.monitor import ModelMonitor
from streamwatch.report import svg
from streamwatch.report.sources import ModelState, ReportInput
from streamwatch.report.words import after, found_after, number, percent, when

DRIFT_KINDS = ("data_drift", "prediction_drift", "label_drift")
QUALITY_KINDS = ("unit_change", "column_swap", "new_category", "data_quality", "schema")
MAX_ALERTS_LISTED = 500  # per model; the timeline shows them all
TABLE_WINDOWS = 24  # newest performance windows in the table

CSS = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#fff;--panel:#f5f7fa;--bad:#c62828;
--warn:#e67e22;--ok:#2e7d32;--ref:#9fb3c8;--cur:#1565c0;--cusum:#8e24aa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
background:var(--bg);margin:0;padding:0 24px 48px;max-width:1200px}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:20px;margin:36px 0 8px;padding-top:12px;
border-top:3px solid var(--line)}h3{font-size:16px;margin:24px 0 6px}h4{font-size:14px;margin:14px 0 4px}
.sub,.note{color:var(--muted)}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:var(--muted)}td.num{text-align:right}
.badge{display:inline-block;border-radius:9px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;
background:var(--muted)}
.badge.firing,.badge.drifting,.badge.alerting{background:var(--bad)}.badge.ok,.badge.resolved{background:var(--ok)}
.badge.warming,.badge.withheld{background:var(--warn)}
nav ul{padding-left:18px}.facts td:first-child{color:var(--muted)}
.grid2{display:flex;flex-wrap:wrap;gap:4px 28px}.chartbox{margin:4px 0 14px}
.chartbox h4{margin-bottom:0}.legend span{margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
svg.chart{display:block;max-width:100%;height:auto;overflow:visible}
svg .grid{stroke:var(--line);stroke-width:1}svg .axis{stroke:var(--muted);stroke-width:1}
svg .tick,svg .lane{fill:var(--muted);font-size:11px}svg .note{fill:var(--muted);font-size:12px}
svg .series{fill:none;stroke-width:1.8}svg circle.series{stroke-width:1.2}
svg .dashed{stroke-dasharray:5 3}
svg .s-score{stroke:var(--cur)}svg circle.s-score{fill:var(--cur)}
svg .s-cusum{stroke:var(--cusum)}svg .s-faint{stroke:var(--ref)}svg circle.s-faint{fill:#fff}
svg .s-cov{stroke:var(--ok)}svg circle.s-cov{fill:var(--ok)}
svg rect.s-ref{fill:var(--ref)}svg rect.s-cur{fill:var(--cur)}
svg .thr{stroke:var(--bad);stroke-width:1.2;stroke-dasharray:6 3}
svg .base{stroke:var(--ok);stroke-width:1.5}svg .res{stroke:var(--warn);stroke-width:1;stroke-dasharray:2 3}
svg .band{fill:var(--ok);opacity:.12}
svg .mark line{stroke-width:1.2}svg .mark path{stroke:none}
svg .mark-fire line{stroke:var(--bad)}svg .mark-fire path{fill:var(--bad)}
svg .mark-start line{stroke:var(--warn);stroke-dasharray:3 3}svg .mark-start path{fill:var(--warn)}
svg .mark-resolve line{stroke:var(--ok)}svg .mark-resolve path{fill:var(--ok)}
svg .span .lead{fill:var(--warn);opacity:.8}svg .span .active{fill:var(--bad);opacity:.25}
svg .span .hit{fill:var(--bad)}svg .span.done .active{fill:var(--ok)}
ol.alerts{padding-left:22px}ol.alerts li{margin:0 0 10px}ol.alerts .what{font-weight:600}
ol.alerts .msg{margin:2px 0 0;color:var(--muted)}ol.alerts .found{font-weight:600}
section.model{margin-top:8px}
"""


def e(v: Any) -> str:
    """Any value as escaped HTML text."""
    return escape(str(v), quote=True)


def _ms(ts: Any) -> int | None:
    if ts is None:
        return None
    try:
        return parse_timestamp(ts)
    except (TypeError, ValueError):
        return None


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table of already escaped cells; cells starting with ``<td`` are taken as they are."""
    out = [
        f'<table class="{css}"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
    ]
    for r in rows:
        out.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _num(v: float | None, digits: int = 3) -> str:
    return f'<td class="num">{e(number(v, digits))}</td>'


def _badge(text: str, css: str | None = None) -> str:
    return f'<span class="badge {e(css or text)}">{e(text)}</span>'


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{e(t)}</span>' for t, c in items)
        + "</div>"
    )


# -- alerts -------------------------------------------------------------------------------


class AlertView:
    """One alert event with its times parsed, and the resolution that ended it (if any)."""

    def __init__(self, ev: dict[str, Any]) -> None:
        self.ev = ev
        self.kind = str(ev.get("kind", ""))
        self.feature = ev.get("feature")
        self.detector = str(ev.get("detector", ""))
        self.status = str(ev.get("status", ""))
        self.detected = _ms(ev.get("detected_at"))
        self.began = _ms(ev.get("change_started_at"))
        self.resolved_by: AlertView | None = None
        self.fired_by: AlertView | None = None

    @property
    def key(self) -> tuple[str, Any, str | None]:
        # a drift alert may fire on the CUSUM and resolve on the window test: one condition
        return (self.kind, self.feature, None if self.kind in DRIFT_KINDS else self.detector)

    @property
    def lane(self) -> str:
        if self.kind == "performance":
            return f"performance · {self.detector.removesuffix('_vs_baseline')}"
        return (
            self.kind
            + (f" · {self.feature}" if self.feature else "")
            + ("" if self.kind in DRIFT_KINDS or self.kind == "concept_drift" else f" ({self.detector})")
        )


def alert_views(events: Iterable[dict[str, Any]]) -> list[AlertView]:
    """Alert events in event-time order, each firing paired with the resolution that ended it."""
    views = sorted(
        (AlertView(ev) for ev in events),
        key=lambda a: (a.detected if a.detected is not None else 0, int(a.ev.get("events_seen") or 0)),
    )
    seen: set[str] = set()
    unique = []
    for a in views:  # at-least-once delivery may repeat an alert: its id says so
        aid = str(a.ev.get("alert_id", id(a)))
        if aid not in seen:
            seen.add(aid)
            unique.append(a)
    open_: dict[tuple[str, Any, str | None], AlertView] = {}
    for a in unique:
        if a.status == "firing":
            open_[a.key] = a
        elif a.status == "resolved" and a.key in open_:
            f = open_.pop(a.key)
            f.resolved_by, a.fired_by = a, f
    return unique


def alert_sentence(a: AlertView) -> str:
    """When it was found, in words (plain text)."""
    if a.status == "resolved":
        s = f"Resolved at {when(a.detected)}"
        if a.fired_by is not None and a.fired_by.detected is not None and a.detected is not None:
            s += f", {after(a.detected - a.fired_by.detected)} after it fired"
        return s + "."
    s = f"Detected at {when(a.detected)}"
    if a.began is not None and a.detected is not None:
        s += f"; began about {when(a.began)}: {found_after(a.detected, a.began)}"
    else:
        s += "; its start was not estimated"
    return s + "."


def _alerts_section(views: list[AlertView]) -> str:
    out = ['<section class="alerts"><h3>Alert timeline</h3>']
    if not views:
        out.append('<p class="note">No alert has been raised for this model.</p></section>')
        return "".join(out)
    lanes: list[str] = []
    for a in views:
        if a.lane not in lanes:
            lanes.append(a.lane)
    spans = []
    for a in views:
        if a.status != "firing":
            continue
        end = a.resolved_by.detected if a.resolved_by is not None else None
        title = f"{a.lane}: {alert_sentence(a)}" + (
            f" Resolved at {when(end)}." if end is not None else " Still firing."
        )
        spans.append(
            (lanes.index(a.lane), a.began, a.detected, end, "done" if end is not None else "open", title)
        )
    out.append(svg.timeline(lanes, spans, "alert timeline"))
    out.append(
        _legend(
            [
                ("from the estimated change start to detection", "var(--warn)"),
                ("firing", "var(--bad)"),
                ("firing until resolved", "var(--ok)"),
            ]
        )
    )
    shown = views[-MAX_ALERTS_LISTED:]
    if len(shown) < len(views):
        out.append(f'<p class="note">The newest {len(shown)} of {len(views)} alerts:</p>')
    out.append('<ol class="alerts">')
    for a in shown:
        ev = a.ev
        stat, thr = ev.get("statistic"), ev.get("threshold")
        what = a.kind + (f" · {a.feature}" if a.feature else "") + f" · {a.detector}"
        out.append(
            f'<li class="alert {e(a.status)}" data-kind="{e(a.kind)}">'
            f"{_badge(a.status)} {_badge(str(ev.get('severity', '')), 'sev')} "
            f'<span class="what">{e(what)}</span> '
            f"statistic {e(number(stat if isinstance(stat, int | float) else None))} "
            f"against {e(number(thr if isinstance(thr, int | float) else None))}"
            + (f", model version {e(ev['model_version'])}" if ev.get("model_version") else "")
            + f'<br><span class="found">{e(alert_sentence(a))}</span>'
            f'<p class="msg">{e(ev.get("message", ""))}</p></li>'
        )
    out.append("</ol></section>")
    return "".join(out)


# -- what is monitored --------------------------------------------------------------------


def _feature_status(m: ModelMonitor, j: int) -> str:
    if not m.reference_ready:
        return _badge(f"warming up {m.events_seen:,}/{m.settings.reference_size:,}", "warming")
    if m.firing[j] and m.withheld[j]:
        return _badge("withheld", "withheld") + " explained by a quality alert"
    return _badge("drifting") if m.firing[j] else _badge("ok")


def _detectors(m: ModelMonitor, j: int) -> str:
    s = m.settings
    numeric = j < len(m.schema.numeric)
    stat = (s.statistic if numeric else s.categorical_statistic).upper()
    text = f"{stat} window test (last {s.window_size:,} events every {s.step:,})"
    if numeric and s.cusum:
        text += f" + CUSUM (mean shift ≥ {s.cusum_min_shift} sd)"
    return e(text)


def _features_table(m: ModelMonitor) -> str:
    cstat, cthr = m.cusum_statistics()
    rows = []
    seen = max(1, m.events_seen)
    for j, name in enumerate(m.schema.names):
        numeric = j < len(m.schema.numeric)
        rows.append(
            [
                f"<b>{e(name)}</b>",
                e(m.features[name].value),
                _detectors(m, j),
                _num(m.scores[j]),
                _num(m.thresholds[j]),
                _num(cstat[j] if numeric else None),
                _num(cthr[j] if numeric else None),
                f'<td class="num">{e(percent(m.missing[j] / seen))}</td>',
                f'<td class="num">{e(percent(m.invalid[j] / seen))}</td>',
                _feature_status(m, j),
            ]
        )
    head = [
        "feature",
        "type",
        "detectors",
        "window statistic",
        "threshold",
        "CUSUM",
        "threshold",
        "missing",
        "invalid",
        "status",
    ]
    return _table(head, rows, "features")


def _quality_block(m: ModelMonitor) -> str:
    q = m.quality
    qs = m.quality_settings
    if not qs.enabled:
        return "<p>Data-quality and dev-prod checks are switched off (<code>quality.enabled</code>).</p>"
    checks = [
        ("unit_change", "a numeric feature now in other units (a factor and offset away from the reference)"),
        ("column_swap", "numeric features whose values trade places"),
        ("new_category", "categories never seen in the reference"),
        ("data_quality", "missing and invalid rates, values out of the reference range, turned constant"),
        ("schema", "undeclared fields, absent features, repeated event ids"),
    ]
    firing: dict[str, list[str]] = {}
    if q is not None:
        for c in q.conditions.values():
            if c.get("status") == "firing":
                firing.setdefault(str(c["kind"]), []).append(
                    ", ".join(map(str, c.get("features") or [])) + f" ({c.get('detector')})"
                )
    rows = [
        [
            f"<b>{e(kind)}</b>",
            e(what),
            _badge("firing") + " " + e("; ".join(firing[kind])) if kind in firing else _badge("ok"),
        ]
        for kind, what in checks
    ]
    if q is None:
        ref = f"the first {m.settings.reference_size:,} events (not reached yet)"
    else:
        ref = f"{q.source} ({q.rows:,} rows)" + (
            f", model version {q.reference_version}" if q.reference_version else ""
        )
    return (
        f"<p>Every {qs.step:,} events over the last {qs.window_size:,}, against {e(ref)}; "
        f"false-alarm level {qs.alpha:g} per check, feature and window.</p>"
        + _table(["check", "looks for", "now"], rows, "checks")
    )


def _performance_block(m: ModelMonitor) -> str:
    t = m.performance
    if t is None:
        return ""
    s = t.settings
    r = t.readout()
    rows = [
        ["task", e(t.task or "not known yet (no prediction)")],
        ["labels joined", e(f"{t.joined_total:,} (labels seen {m.labels_seen:,})")],
        [
            "windows",
            e(
                f"{s.window_seconds:g} s of prediction time, judged from {s.min_labels} labels and "
                f"{s.min_coverage:.0%} coverage"
            ),
        ],
    ]
    if t.baseline:
        src = "config or profile" if s.baseline else f"the first {s.reference_labels:,} labelled events"
        base = ", ".join(f"{k} {number(v)}" for k, v in t.baseline.items())
        rows.append(["baseline", e(f"{base} (from {src}; tolerance {s.tolerance})")])
    else:
        rows.append(["baseline", e(f"after the first {s.reference_labels:,} labelled events")])
    firing = [k for k, v in r.firing.items() if v]
    rows.append(["performance", _badge("firing") + " " + e(", ".join(firing)) if firing else _badge("ok")])
    if r.concept is not None:
        stat, thr, on = r.concept
        rows.append(
            [
                "concept drift (CUSUM on the error)",
                (_badge("firing") if on else _badge("ok")) + e(f" {number(stat)} / threshold {number(thr)}"),
            ]
        )
    elif s.concept_drift:
        rows.append(["concept drift (CUSUM on the error)", e("starts with the baseline")])
    for name, cov in r.coverage.items():
        rows.append([e(f"label coverage, {name} window"), e(percent(cov))])
    for name, est in r.estimated.items():
        if est:
            text = ", ".join(f"{k} {number(v)}" for k, v in sorted(est.items()))
            rows.append([e(f"estimated (CBPE), {name} window"), e(text)])
    return _table(["", ""], rows, "facts")


def _kinds(m: ModelMonitor) -> list[str]:
    kinds = ["data_drift", "prediction_drift", "label_drift"]
    if m.performance is not None:
        kinds.append("performance")
        if m.performance.settings.concept_drift:
            kinds.append("concept_drift")
    if m.quality_settings.enabled:
        kinds += list(QUALITY_KINDS)
    return kinds


def _budget(m: ModelMonitor) -> str:
    s = m.settings
    text = (
        f"One false drift alert expected every {s.false_alarm_events:,.0f} events of this model, "
        f"shared over {m.budget_units} detector units (one per feature, four for the outputs and "
        f"concept drift): each window test has a false-alarm probability of {m.window_alpha:.2g}"
    )
    if m.cusum_features:
        text += f", each CUSUM an in-control run length of {m.cusum_arl0:,.0f} events"
    return e(text + f"; alerts resolve below {s.resolve_ratio} of their threshold.")


def _monitored(ms: ModelState) -> str:
    m = ms.monitor
    out = ['<section class="monitored"><h3>What is monitored, and its status now</h3>']
    out.append(f"<p>{_budget(m)}</p>")
    out.append("<h4>Features</h4>" + _features_table(m))
    outputs = [(k, o) for k, o in m.outputs.items()]
    if outputs:
        out.append("<h4>Outputs</h4>")
        for which, o in outputs:
            rows = [
                [
                    f"<b>{e(which)}: {e(name)}</b>",
                    _detectors(o, j),
                    _num(o.scores[j]),
                    _num(o.thresholds[j]),
                    _feature_status(o, j),
                ]
                for j, name in enumerate(o.schema.names)
            ]
            out.append(_table(["output", "detectors", "window statistic", "threshold", "status"], rows))
    else:
        out.append('<p class="note">Prediction and label monitors start with the first prediction.</p>')
    if m.performance is not None:
        out.append("<h4>Performance</h4>" + _performance_block(m))
    out.append("<h4>Data-quality and dev-prod checks</h4>" + _quality_block(m))
    out.append(
        "<h4>Alert kinds</h4><p>" + ", ".join(f"<code>{e(k)}</code>" for k in _kinds(m)) + "</p></section>"
    )
    return "".join(out)


# -- distributions ------------------------------------------------------------------------


def bin_labels(m: ModelMonitor, j: int) -> list[str]:
    """Readable names of feature ``j``'s bins: value ranges, or categories and ``other``."""
    assert m.bins is not None
    n_num = len(m.schema.numeric)
    if j < n_num:
        edges = [number(float(v)) for v in m.bins.edges[j]]
        if not edges:
            return ["all"]
        return [f"≤ {edges[0]}"] + [f"{a} to {b}" for a, b in itertools.pairwise(edges)] + [f"> {edges[-1]}"]
    jj = j - n_num
    mapping = m.bins.category_bins[jj]
    vocab = m.schema.vocabulary(jj)
    labels = ["other"] * int(m.bins.sizes[j])
    for code, b in enumerate(mapping.tolist()):
        if b < m.bins.max_categories and code < len(vocab):
            labels[b] = str(vocab[code])
    return labels


def _distribution(m: ModelMonitor, j: int, title: str) -> str:
    assert m.bins is not None and m.reference_counts is not None and m.window is not None
    lo = int(m.bins.offsets[j])
    hi = lo + int(m.bins.sizes[j])
    ref = m.reference_counts[lo:hi].astype(np.float64)
    cur = m.window.counts()[lo:hi].astype(np.float64)
    keep = (ref > 0) | (cur > 0)
    labels = [x for x, k in zip(bin_labels(m, j), keep.tolist(), strict=True) if k]
    ref_share = (ref / max(ref.sum(), 1))[keep].tolist()
    cur_share = (cur / max(cur.sum(), 1))[keep].tolist()
    stat = m.tests.statistics[j].upper() if m.tests is not None else "statistic"
    note = (
        f"{stat} {number(m.scores[j])} against {number(m.thresholds[j])}; "
        f"current window: {int(cur.sum()):,} values"
    )
    chart = svg.bar_pairs(labels, ref_share, cur_share, f"{title}: reference and current window")
    return f'<div class="chartbox dist"><h4>{e(title)}</h4><div class="note">{e(note)}</div>{chart}</div>'


def _distributions(ms: ModelState) -> str:
    m = ms.monitor
    out = ['<section class="distributions"><h3>Reference and current distributions</h3>']
    if not m.reference_ready:
        out.append(
            f'<p class="note">The reference is the first {m.settings.reference_size:,} events; '
            f"{m.events_seen:,} seen so far.</p></section>"
        )
        return "".join(out)
    out.append(
        "<p>Shares of each bin in the reference and in the current window; numeric features use "
        "the reference's quantile bins (equal mass there), categorical ones its frequent values.</p>"
    )
    out.append(_legend([("reference", "var(--ref)"), ("current window", "var(--cur)")]))
    out.append('<div class="grid2">')
    monitors = [("", m), *((f"{k}: ", o) for k, o in m.outputs.items())]
    for prefix, mon in monitors:
        if not mon.reference_ready:
            continue
        for j, name in enumerate(mon.schema.names):
            kind = mon.features[name].value
            out.append(_distribution(mon, j, f"{prefix}{name} ({kind})"))
    out.append("</div></section>")
    return "".join(out)


# -- drift over time ----------------------------------------------------------------------


def _ratio(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> list[float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(b > 0, a / b, np.nan)
    return [float(v) for v in r]


def _drift_marks(views: list[AlertView], kind: str, feature: str) -> list[svg.Mark]:
    marks = []
    for a in views:
        if a.kind != kind or a.feature != feature or a.detected is None:
            continue
        if a.status == "firing":
            if a.began is not None:
                marks.append(svg.Mark(a.began, "mark-start", f"change began about {when(a.began)}"))
            marks.append(svg.Mark(a.detected, "mark-fire", f"{a.detector} alert: {alert_sentence(a)}"))
        else:
            marks.append(svg.Mark(a.detected, "mark-resolve", alert_sentence(a)))
    return marks


def _drift(ms: ModelState, views: list[AlertView]) -> str:
    m = ms.monitor
    out = ['<section class="drift"><h3>Drift over time</h3>']
    if len(m.history) == 0:
        out.append('<p class="note">No window has been evaluated yet.</p></section>')
        return "".join(out)
    h = m.history
    out.append(
        f"<p>Each detector's statistic over its threshold (so each alarms at 1), at every window "
        f"evaluation; {len(h)} points, each the largest of {h.stride} evaluation(s).</p>"
    )
    out.append(
        _legend(
            [
                ("window test / threshold", "var(--cur)"),
                ("CUSUM / threshold", "var(--cusum)"),
                ("threshold", "var(--bad)"),
                ("resolves below", "var(--warn)"),
            ]
        )
    )
    out.append('<div class="grid2">')
    monitors = [("", m), *((f"{k}: ", o) for k, o in m.outputs.items())]
    ranges = {
        k: _x_range(
            [mon for _, mon in monitors if (mon.kind == "label_drift") == (k == "label_drift")], views
        )
        for k in ("data_drift", "label_drift")
    }
    for prefix, mon in monitors:
        if len(mon.history) == 0:
            continue
        x_range = ranges["label_drift" if mon.kind == "label_drift" else "data_drift"]
        ser = mon.history.series()
        xs = [float(v) for v in ser["times_ms"]]
        for j, name in enumerate(mon.schema.names):
            stat = mon.tests.statistics[j].upper() if mon.tests is not None else "window"
            lines = [
                svg.Series(
                    f"{stat} / threshold", xs, _ratio(ser["scores"][:, j], ser["thresholds"][:, j]), "s-score"
                )
            ]
            if j < len(mon.schema.numeric) and mon.settings.cusum:
                lines.append(
                    svg.Series(
                        "CUSUM / threshold",
                        xs,
                        _ratio(ser["cusum"][:, j], ser["cusum_thresholds"][:, j]),
                        "s-cusum",
                    )
                )
            chart = svg.line_chart(
                lines,
                f"{prefix}{name}: statistics over their thresholds",
                hlines=[(1.0, "thr", "threshold"), (mon.settings.resolve_ratio, "res", "resolves below")],
                marks=_drift_marks(views, mon.kind, name),
                x_range=x_range,
            )
            out.append(f'<div class="chartbox drift-chart"><h4>{e(prefix + name)}</h4>{chart}</div>')
    out.append("</div></section>")
    return "".join(out)


# -- performance over time ----------------------------------------------------------------


def performance_windows(m: ModelMonitor) -> list[dict[str, Any]]:
    """Every window the tracker remembers (history) or still holds (live, recomputed now)."""
    t = m.performance
    if t is None:
        return []
    rows = {r["window"]: r for r in t.history.rows()}
    names = tuple(t.baseline) or (t.judged_metrics if t.task is not None else ())
    for i, w in t.windows.items():
        values = t.metrics_of(w.rows) if len(w.rows) and t.task is not None else {}
        rows[i] = {
            "window": i,
            "start_ms": i * t.window_ms,
            "values": {k: values[k] for k in names if k in values},
            "baseline": dict(t.baseline),
            "coverage": t.coverage(i),
            "labels": len(w.rows),
            "predictions": w.predictions,
        }
    return [rows[i] for i in sorted(rows)]


def _f(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan


def _performance(ms: ModelState, views: list[AlertView]) -> str:
    m = ms.monitor
    t = m.performance
    if t is None:
        return ""
    out = ['<section class="performance"><h3>Performance over time</h3>']
    rows = performance_windows(m)
    if not rows:
        out.append('<p class="note">No prediction window yet.</p></section>')
        return "".join(out)
    s = t.settings
    half = t.window_ms / 2
    x_range = (float(rows[0]["start_ms"]), float(rows[-1]["start_ms"] + t.window_ms))
    xs = [r["start_ms"] + half for r in rows]
    judged = [(r["labels"] >= s.min_labels and _f(r["coverage"]) >= s.min_coverage) for r in rows]
    metrics = list(dict.fromkeys(k for r in rows for k in r["values"]))
    out.append(
        f"<p>Each point is one {after(t.window_ms)} window of prediction time, placed at its middle; "
        f"filled points have enough labels to be judged ({s.min_labels}+ labels, "
        f"{s.min_coverage:.0%}+ coverage). The band is the baseline ± the tolerance ({s.tolerance}).</p>"
    )
    out.append(
        _legend(
            [
                ("judged windows", "var(--cur)"),
                ("too few labels", "var(--ref)"),
                ("baseline", "var(--ok)"),
                ("label coverage", "var(--ok)"),
            ]
        )
    )
    concept = [a for a in views if a.kind == "concept_drift" and a.detected is not None]
    out.append('<div class="grid2">')
    for metric in metrics:
        vals = [_f(r["values"].get(metric)) for r in rows]
        base = _f(t.baseline.get(metric))
        titles = [
            f"{when(r['start_ms'])}: {metric} {number(v)}, {r['labels']:,} labels, "
            f"{percent(_f(r['coverage']))} labelled"
            for r, v in zip(rows, vals, strict=True)
        ]
        ok = [v if j else math.nan for v, j in zip(vals, judged, strict=True)]
        thin = [math.nan if j else v for v, j in zip(vals, judged, strict=True)]
        marks = []
        for a in views:
            if a.kind == "performance" and a.detector == f"{metric}_vs_baseline" and a.detected is not None:
                css = "mark-fire" if a.status == "firing" else "mark-resolve"
                marks.append(svg.Mark(a.detected, css, f"{a.status}: {alert_sentence(a)}"))
        marks += [
            svg.Mark(a.detected or 0, "mark-fire", f"concept drift {a.status}: {alert_sentence(a)}")
            for a in concept
        ]
        chart = svg.line_chart(
            [
                svg.Series(metric, xs, ok, "s-score", points=True, titles=titles),
                svg.Series(
                    f"{metric} (too few labels)", xs, thin, "s-faint", points=True, line=False, titles=titles
                ),
            ],
            f"{metric} per window against the baseline",
            hlines=[(base, "base", f"baseline {number(base)}")] if math.isfinite(base) else [],
            band=(base - s.tolerance, base + s.tolerance) if math.isfinite(base) else None,
            marks=marks,
            x_range=x_range,
            y_floor=None,
        )
        out.append(f'<div class="chartbox perf-chart"><h4>{e(metric)}</h4>{chart}</div>')
    cov = [_f(r["coverage"]) for r in rows]
    chart = svg.line_chart(
        [svg.Series("label coverage", xs, cov, "s-cov", points=True)],
        "label coverage per window",
        hlines=[(s.min_coverage, "res", f"coverage needed to judge ({s.min_coverage:.0%})")],
        x_range=x_range,
        y_fmt="percent",
        height=150,
    )
    out.append(f'<div class="chartbox coverage-chart"><h4>label coverage</h4>{chart}</div></div>')
    head = ["window from", "predictions", "labels", "coverage", *(e(k) for k in metrics)]
    table_rows = [
        [
            e(when(r["start_ms"])),
            f'<td class="num">{r["predictions"]:,}</td>',
            f'<td class="num">{r["labels"]:,}</td>',
            f'<td class="num">{e(percent(_f(r["coverage"])))}</td>',
            *(_num(_f(r["values"].get(k))) for k in metrics),
        ]
        for r in rows[-TABLE_WINDOWS:]
    ]
    out.append(f"<h4>The newest {len(table_rows)} windows</h4>" + _table(head, table_rows, "windows"))
    out.append("</section>")
    return "".join(out)


# -- the page -----------------------------------------------------------------------------


def model_status(m: ModelMonitor) -> tuple[str, list[str]]:
    """``alerting``/``ok``/``warming``, and what is firing now (plain text)."""
    firing = [f"data_drift {n}" for j, n in enumerate(m.schema.names) if m.firing[j]]
    for o in m.outputs.values():
        firing += [f"{o.kind} {n}" for j, n in enumerate(o.schema.names) if o.firing[j]]
    t = m.performance
    if t is not None:
        firing += [f"performance {k}" for k, v in t.firing.items() if v]
        if t.concept_firing:
            firing.append("concept_drift")
    if m.quality is not None:
        firing += [
            f"{c['kind']} {','.join(map(str, c.get('features') or []))}".strip()
            for c in m.quality.conditions.values()
            if c.get("status") == "firing"
        ]
    if firing:
        return "alerting", firing
    return ("ok" if m.reference_ready else "warming"), []


def _x_range(monitors: Sequence[ModelMonitor], views: list[AlertView]) -> tuple[float, float] | None:
    """Event times the drift charts of ``monitors`` share: their evaluations and drift alerts.

    Predictions and labels keep apart: labels come in long after their predictions, so one
    axis for both would squeeze the predictions' charts into a corner.
    """
    xs: list[float] = []
    kinds = {mon.kind for mon in monitors}
    for mon in monitors:
        if len(mon.history):
            ts = mon.history.series()["times_ms"]
            xs += [float(ts[0]), float(ts[-1])]
    xs += [float(v) for a in views if a.kind in kinds for v in (a.detected, a.began) if v is not None]
    return (min(xs), max(xs)) if xs else None


def _title(ms: ModelState, split: bool) -> str:
    return ms.model_id + (f" (partition {ms.partition})" if split else "")


def _model(i: int, ms: ModelState, events: list[dict[str, Any]], split: bool) -> str:
    m = ms.monitor
    views = alert_views(ev for ev in events if ev.get("model_id") == ms.model_id)
    status, firing = model_status(m)
    head = (
        f'<section class="model" id="model-{i}" data-model="{e(ms.model_id)}">'
        f"<h2>{e(_title(ms, split))} {_badge(status)}</h2>"
        f'<p class="sub">{m.events_seen:,} predictions and {m.labels_seen:,} labels seen'
        + (f"; model version {e(m.model_version)}" if m.model_version else "")
        + (f"; {len(views)} alert events" if views else "; no alert events")
        + ".</p>"
    )
    if firing:
        head += "<p><b>Firing now:</b> " + e(", ".join(firing)) + "</p>"
    return (
        head
        + _monitored(ms)
        + _distributions(ms)
        + _drift(ms, views)
        + _performance(ms, views)
        + _alerts_section(views)
        + "</section>"
    )


def render(inp: ReportInput) -> str:
    """The whole page."""
    split = {s.model_id for s in inp.models if sum(1 for o in inp.models if o.model_id == s.model_id) > 1}
    toc_rows = []
    for i, ms in enumerate(inp.models):
        status, firing = model_status(ms.monitor)
        toc_rows.append(
            [
                f'<a href="#model-{i}">{e(_title(ms, ms.model_id in split))}</a>',
                _badge(status),
                f'<td class="num">{ms.monitor.events_seen:,}</td>',
                f'<td class="num">{ms.monitor.labels_seen:,}</td>',
                e(", ".join(firing) or "-"),
            ]
        )
    facts = [("source", inp.source), ("generated", when(inp.generated_at_ms)), *inp.facts]
    body = [
        "<header><h1>streamwatch report</h1>",
        f'<p class="sub">{len(inp.models)} model(s) from {e(inp.source)}; event times in UTC.</p>',
        _table(["", ""], ([e(k), e(v)] for k, v in facts), "facts"),
        "</header>",
    ]
    for n in inp.notes:
        body.append(f'<p class="note warn">{e(n)}</p>')
    if inp.models:
        body.append(
            "<nav><h2>Models</h2>"
            + _table(["model", "status", "predictions", "labels", "firing now"], toc_rows, "overview")
            + "</nav>"
        )
    else:
        body.append('<p class="note">No model matched: nothing to report.</p>')
    ids = [ms.model_id for ms in inp.models]
    for i, ms in enumerate(inp.models):
        body.append(_model(i, ms, inp.alerts, ms.model_id in split))
    body.append(f'<footer class="note"><p>streamwatch {e(__version__)}</p></footer>')
    title = "streamwatch report" + (f": {', '.join(dict.fromkeys(ids))}" if ids else "")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # nothing may be loaded from anywhere: the page is complete as it is
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


__all__ = ["alert_sentence", "alert_views", "bin_labels", "model_status", "performance_windows", "render"]
