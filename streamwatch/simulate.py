"""Synthetic prediction and label events with known, injected changes (and their ground truth).

The same generator feeds the demo, the tests and the benchmarks, so every one of them knows
exactly where a detector should fire. A :class:`Scenario` names one change (or ``none``, or
``tour``: several changes one after the other); :meth:`Scenario.truth` says what was injected,
from which event and event time, on which features, and which alerts should follow.

Examples
--------
>>> s = Scenario(name="variance_change", events=2_000, change_at=1_000, shift_feature="age")
>>> predictions, labels = generate(s)
>>> len(predictions), predictions[0]["model_id"]
(2000, 'credit-risk')
>>> change = s.truth()["changes"][0]
>>> change["kind"], change["feature"], change["start_index"], change["start_time"]
('data_drift', 'age', 1000, '2027-01-01T00:00:10.000Z')
>>> [a["kind"] for a in s.truth()["expected_alerts"]]
['data_drift']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamwatch.events import format_timestamp

NUMERIC_NAMES = ["age", "income", "debt_ratio", "tenure_months", "utilization", "num_accounts"]
# (mean, standard deviation) per numeric feature, in the units a development set would have
NUMERIC_SCALES = [
    (41.0, 12.0),
    (52_000.0, 18_000.0),
    (0.35, 0.12),
    (48.0, 30.0),
    (0.45, 0.2),
    (6.0, 3.0),
]
COUNTRIES = ["DE", "FR", "NL", "IT", "ES"]
COUNTRY_P = [0.35, 0.25, 0.15, 0.15, 0.10]
SCENARIOS = (
    "none",
    "mean_shift",
    "variance_change",
    "gradual_drift",
    "covariate_shift",
    "concept_drift",
    "label_delay",
    # dev-prod discrepancies (streamwatch.quality): applied after all random draws of the stream
    "unit_change",
    "column_swap",
    "new_category",
    "missing_feature",
    # added with the schema checks; like the ones above they draw nothing from the stream's generator
    "column_rotation",
    "string_value",
    "unknown_field",
    "absent_feature",
    "duplicate_ids",
    # several of the above one after the other (the demo)
    "tour",
)
DESCRIPTIONS = {
    "none": "nothing changes: every detector should stay quiet",
    "mean_shift": "the mean of --shift-feature moves by --shift standard deviations",
    "variance_change": "the spread of --shift-feature grows --scale times, its mean stays",
    "gradual_drift": "the mean of --shift-feature moves by --shift sd, linearly over --ramp-events",
    "covariate_shift": "an input moves away from the decision boundary: drift that does not hurt",
    "concept_drift": "labels flip where the first feature is above its mean; inputs unchanged",
    "label_delay": "labels arrive --delay-factor times later; nothing else changes",
    "unit_change": "--shift-feature is sent in another unit (x --unit-factor)",
    "column_swap": "--shift-feature and tenure_months trade values",
    "new_category": "country takes a value never seen before",
    "missing_feature": "--shift-feature is always null",
    "column_rotation": "age, tenure_months and debt_ratio each get the next one's values",
    "string_value": "--shift-feature holds a string instead of a number",
    "unknown_field": "every event carries a field the config does not declare",
    "absent_feature": "the key --shift-feature is not sent any more",
    "duplicate_ids": "5% of events repeat the previous event's id",
    "tour": "concept drift (labels flip), a mean shift, a new category, a unit change, in turn",
}
DEFAULT_START_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z: a fixed start keeps runs identical
# the tour's stages: (scenario, share of the stream before it starts, its parameters)
TOUR: list[tuple[str, float, dict[str, Any]]] = [
    # concept drift first: its alert then finds no input drifting at the same time
    ("concept_drift", 0.2, {}),
    ("mean_shift", 0.45, {"shift_feature": "income", "shift_sigmas": 1.0}),
    ("new_category", 0.6, {"new_category": "XX", "new_category_share": 0.03}),
    ("unit_change", 0.75, {"shift_feature": "debt_ratio", "unit_factor": 100.0, "unit_offset": 0.0}),
]
# the scenarios that change the inputs the model sees (before its predictions are computed)
_INPUT_SHIFTS = ("mean_shift", "variance_change", "gradual_drift", "covariate_shift")


def numeric_names(n: int) -> list[str]:
    return [NUMERIC_NAMES[i] if i < len(NUMERIC_NAMES) else f"x{i}" for i in range(n)]


@dataclass
class Scenario:
    """Parameters of one simulated stream; ``truth()`` says what was injected where.

    Parameters
    ----------
    name
        One of :data:`SCENARIOS`.
    events
        Prediction events of the stream (a share ``label_share`` of them gets a label).
    numeric_features
        Numeric features (``age``, ``income``, ...); a categorical ``country`` is always added.
    change_at
        Index of the first event the change affects (the tour places its own stages).
    rate_per_second
        Events per second of event time, from ``start_ms``.
    seed
        Seed of every random draw: the same parameters give the same events.
    """

    name: str = "mean_shift"
    model_id: str = "credit-risk"
    events: int = 20_000
    numeric_features: int = 4
    change_at: int = 10_000
    shift_feature: str = "income"
    shift_sigmas: float = 1.0
    rate_per_second: float = 100.0
    start_ms: int = DEFAULT_START_MS
    label_share: float = 0.5
    label_delay_seconds: float = 600.0
    seed: int = 7
    scale_factor: float = 2.0  # variance_change: shift_feature's deviations from its mean grow this much
    ramp_events: int | None = None  # gradual_drift: events of the ramp (default: half of what follows)
    delay_factor: float = 24.0  # label_delay: label delays after the change are this many times longer
    unit_factor: float = 2.54  # unit_change: shift_feature becomes factor * value + unit_offset
    unit_offset: float = 0.0
    swap_with: str = "tenure_months"  # column_swap: shift_feature and this one trade values
    new_category: str = "XX"  # new_category: a country never seen before, at new_category_share
    new_category_share: float = 0.02
    # column_rotation: the first feature gets the second's values, the second the third's, ...
    rotation: list[str] = field(default_factory=lambda: ["age", "tenure_months", "debt_ratio"])
    string_value: str = "n/a"  # string_value: shift_feature holds this string instead of a number
    unknown_field: str = "channel"  # unknown_field: every event also carries this undeclared field
    duplicate_share: float = 0.05  # duplicate_ids: share of events that repeat the previous event's id
    features: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; choose one of {', '.join(SCENARIOS)}")
        if not 1 <= self.numeric_features <= 50:
            raise ValueError(f"numeric_features must be between 1 and 50, got {self.numeric_features}")
        if self.events < 1:
            raise ValueError(f"events must be at least 1, got {self.events}")
        if self.rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive, got {self.rate_per_second:g}")
        if not 0 <= self.label_share <= 1:
            raise ValueError(f"label_share must be between 0 and 1, got {self.label_share:g}")
        if self.label_delay_seconds < 0:
            raise ValueError(f"label_delay_seconds must not be negative, got {self.label_delay_seconds:g}")
        if self.name not in ("none", "tour") and not 0 <= self.change_at < self.events:
            raise ValueError(
                f"change_at must be between 0 and events - 1 ({self.events - 1}), got {self.change_at}"
            )
        self.features = numeric_names(self.numeric_features)
        uses = (
            *_INPUT_SHIFTS,
            "unit_change",
            "column_swap",
            "missing_feature",
            "string_value",
            "absent_feature",
        )
        if self.name in uses and self.shift_feature not in self.features:
            raise ValueError(f"shift_feature {self.shift_feature!r} is not among {self.features}")
        if self.name == "column_swap" and self.swap_with not in self.features:
            raise ValueError(f"swap_with {self.swap_with!r} is not among {self.features}")
        if self.name == "column_rotation" and (
            len(set(self.rotation)) < 2 or not set(self.rotation) <= set(self.features)
        ):
            raise ValueError(f"rotation {self.rotation!r} needs two or more of {self.features}")
        if self.name == "variance_change" and self.scale_factor <= 0:
            raise ValueError(f"scale_factor must be positive, got {self.scale_factor:g}")
        if self.name == "gradual_drift" and self.ramp_events is not None and self.ramp_events < 1:
            raise ValueError(f"ramp_events must be at least 1, got {self.ramp_events}")
        if self.name == "label_delay" and self.delay_factor <= 0:
            raise ValueError(f"delay_factor must be positive, got {self.delay_factor:g}")
        if self.name == "tour":
            self.stages()  # each stage validates its own parameters

    def time_ms(self, i: int) -> int:
        return self.start_ms + int(i * 1000 / self.rate_per_second)

    def config(self) -> dict[str, Any]:
        """The ``models`` entry a streamwatch config needs for this stream."""
        feats: dict[str, str] = {n: "numeric" for n in self.features}
        feats["country"] = "categorical"
        return {self.model_id: {"features": feats}}

    def stages(self) -> list[Scenario]:
        """The single changes of the stream, in order (each a scenario of its own)."""
        if self.name == "none":
            return []
        if self.name != "tour":
            return [self]
        try:
            return [
                replace(self, name=name, change_at=int(share * self.events), **params)
                for name, share, params in TOUR
            ]
        except ValueError as e:
            raise ValueError(f"the tour needs the features income and debt_ratio (3 or more): {e}") from None

    @property
    def ramp(self) -> int:
        """gradual_drift: events over which the mean moves."""
        return self.ramp_events or max(1, (self.events - self.change_at) // 2)

    def truth(self) -> dict[str, Any]:
        """What was injected: the ground truth a run's alerts are judged against.

        ``changes`` lists each change with its ``kind`` (the alert it should raise, or
        ``label_delay``), ``feature`` (as alerts name it: ``a,b`` for a swap; null for a
        model-level change), ``features``, ``start_index`` and ``start_time`` (the first
        affected event), ``change`` (in words) and ``expected_alerts`` (kind and feature of
        each alert it should raise). ``expected_alerts`` at the top is their union; an empty
        list means every detector should stay quiet.
        """
        changes = [_change(st) for st in self.stages()]
        return {
            "scenario": self.name,
            "description": DESCRIPTIONS[self.name],
            "model_id": self.model_id,
            "events": self.events,
            "seed": self.seed,
            "rate_per_second": self.rate_per_second,
            "start_time": format_timestamp(self.start_ms),
            "end_time": format_timestamp(self.time_ms(self.events - 1)),
            "label_share": self.label_share,
            "label_delay_seconds": self.label_delay_seconds,
            "features": [*self.features, "country"],
            "changes": changes,
            "expected_alerts": [a for c in changes for a in c["expected_alerts"]],
        }


def _change(s: Scenario) -> dict[str, Any]:
    """The ground truth of one single-change scenario."""
    f = s.shift_feature
    at = {"start_index": s.change_at, "start_time": format_timestamp(s.time_ms(s.change_at))}
    kind: str | None
    feature: str | None
    if s.name == "mean_shift":
        kind, feature, what = "data_drift", f, f"mean + {s.shift_sigmas} standard deviations"
    elif s.name == "variance_change":
        kind, feature, what = "data_drift", f, f"standard deviation x {s.scale_factor:g}, same mean"
    elif s.name == "gradual_drift":
        kind, feature = "data_drift", f
        what = f"mean + {s.shift_sigmas} standard deviations, reached linearly over {s.ramp} events"
        at["end_index"] = min(s.events, s.change_at + s.ramp)
    elif s.name == "covariate_shift":
        kind, feature = "data_drift", f
        what = f"mean moved {s.shift_sigmas} sd away from the decision boundary (accuracy does not drop)"
    elif s.name == "concept_drift":
        kind, feature = "concept_drift", None
        what = f"labels flip where {s.features[0]} is above its mean; inputs unchanged"
    elif s.name == "label_delay":
        kind, feature = "label_delay", None
        what = (
            f"labels of predictions from here on arrive {s.delay_factor:g} times later "
            f"(mean {s.label_delay_seconds * s.delay_factor:g} s instead of {s.label_delay_seconds:g} s); "
            "visible in streamwatch_label_delay_seconds and streamwatch_label_coverage_ratio"
        )
    elif s.name == "unit_change":
        kind, feature, what = "unit_change", f, f"value * {s.unit_factor:g} + {s.unit_offset:g}"
    elif s.name == "column_swap":
        kind, feature = "column_swap", ",".join(sorted([f, s.swap_with]))
        what = f"{f} and {s.swap_with} swapped"
    elif s.name == "new_category":
        kind, feature = "new_category", "country"
        what = f"new value {s.new_category!r} at {s.new_category_share:.1%} share"
    elif s.name == "missing_feature":
        kind, feature, what = "data_quality", f, "always null"
    elif s.name == "column_rotation":
        r = s.rotation
        kind, feature = "column_swap", ",".join(sorted(r))
        what = ", ".join(f"{a} <- {b}" for a, b in zip(r, r[1:] + r[:1], strict=True))
    elif s.name == "string_value":
        kind, feature, what = "data_quality", f, f"the string {s.string_value!r} instead of a number"
    elif s.name == "unknown_field":
        kind, feature, what = "schema", s.unknown_field, "an undeclared field"
    elif s.name == "absent_feature":
        kind, feature, what = "schema", f, "the key is not sent"
    elif s.name == "duplicate_ids":
        kind, feature = "data_quality", None
        what = f"{s.duplicate_share:.0%} of events repeat the previous event's id"
    else:  # pragma: no cover - stages() never yields "none" or "tour"
        raise AssertionError(s.name)
    # the core has no label-delay alert: a slower label stream must raise nothing
    expected = [] if kind == "label_delay" else [{"kind": kind, "feature": feature}]
    return {
        "scenario": s.name,
        "kind": kind,
        "feature": feature,
        "features": feature.split(",") if feature else [],
        "change": what,
        **at,
        "expected_alerts": expected,
    }


def generate(
    s: Scenario, on_progress: Callable[[int], None] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prediction events in time order, and label events (for ``label_share`` of them) in time order.

    ``on_progress(events)`` is called now and then with the number of predictions made so far.
    """
    rng = np.random.default_rng(s.seed)
    n, k = s.events, s.numeric_features
    stages = s.stages()
    z = rng.standard_normal((n, k))
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P)
    weights = rng.normal(0, 1, k)
    for st in stages:  # the inputs move before the model sees them; no draws, so streams stay aligned
        _shift_inputs(st, z, weights)
    scales = [NUMERIC_SCALES[i] if i < len(NUMERIC_SCALES) else (0.0, 1.0) for i in range(k)]
    x = z * np.array([sd for _, sd in scales]) + np.array([mu for mu, _ in scales])
    p_reject = 1 / (1 + np.exp(-(z @ weights) / np.sqrt(k) - 1.0))
    truth_reject = rng.random(n) < p_reject
    for st in stages:
        if st.name == "concept_drift":  # P(y|x) changes in one region; the inputs do not
            region = np.arange(n) >= st.change_at
            region &= z[:, 0] > 0
            truth_reject[region] = ~truth_reject[region]
    labelled = rng.random(n) < s.label_share
    raw_delays = rng.exponential(s.label_delay_seconds * 1000, n)
    for st in stages:
        if st.name == "label_delay":
            raw_delays[st.change_at :] *= st.delay_factor
    delays = raw_delays.astype(np.int64)

    predictions: list[dict[str, Any]] = []
    labels: list[tuple[int, dict[str, Any]]] = []
    names = s.features
    for i in range(n):
        if on_progress is not None and i and i % 10_000 == 0:
            on_progress(i)
        t = s.time_ms(i)
        feats: dict[str, Any] = {names[j]: round(float(x[i, j]), 4) for j in range(k)}
        feats["country"] = COUNTRIES[int(country[i])]
        pr = round(float(p_reject[i]), 4)
        event_id = f"{s.model_id}-{s.seed}-{i}"
        predictions.append(
            {
                "event_id": event_id,
                "model_id": s.model_id,
                "model_version": "1",
                "timestamp": format_timestamp(t),
                "features": feats,
                "prediction": {
                    "label": "reject" if pr >= 0.5 else "approve",
                    "scores": {"approve": round(1 - pr, 4), "reject": pr},
                },
            }
        )
        if labelled[i]:
            lt = t + int(delays[i])
            label = "reject" if truth_reject[i] else "approve"
            labels.append(
                (
                    lt,
                    {
                        "event_id": event_id,
                        "model_id": s.model_id,
                        "timestamp": format_timestamp(lt),
                        "label": label,
                    },
                )
            )
    labels.sort(key=lambda p: p[0])
    for st in stages:
        _plant_discrepancy(st, predictions)
    if on_progress is not None:
        on_progress(n)
    return predictions, [e for _, e in labels]


def _shift_inputs(
    s: Scenario, z: np.ndarray[Any, np.dtype[np.float64]], weights: np.ndarray[Any, Any]
) -> None:
    """Move the standardised inputs ``z`` in place for the input-shift scenarios."""
    if s.name not in _INPUT_SHIFTS:
        return
    j = s.features.index(s.shift_feature)
    a = s.change_at
    if s.name == "mean_shift":
        z[a:, j] += s.shift_sigmas
    elif s.name == "variance_change":
        z[a:, j] *= s.scale_factor
    elif s.name == "gradual_drift":
        ramp = np.minimum(np.arange(1, len(z) - a + 1) / s.ramp, 1.0)
        z[a:, j] += s.shift_sigmas * ramp
    elif s.name == "covariate_shift":  # towards a confident "reject": further from the boundary
        z[a:, j] += s.shift_sigmas * np.sign(weights[j])


def _plant_discrepancy(s: Scenario, predictions: list[dict[str, Any]]) -> None:
    """The dev-prod scenarios edit the events' features after the change (predictions and labels
    stay those of the true inputs); their own draws use a separate generator."""
    after = [p["features"] for p in predictions[s.change_at :]]
    if s.name == "unit_change":
        for f in after:
            f[s.shift_feature] = round(f[s.shift_feature] * s.unit_factor + s.unit_offset, 4)
    elif s.name == "column_swap":
        a, b = s.shift_feature, s.swap_with
        for f in after:
            f[a], f[b] = f[b], f[a]
    elif s.name == "missing_feature":
        for f in after:
            f[s.shift_feature] = None
    elif s.name == "new_category":
        hit = np.random.default_rng([s.seed, 5]).random(len(after)) < s.new_category_share
        for f, h in zip(after, hit.tolist(), strict=True):
            if h:
                f["country"] = s.new_category
    elif s.name == "column_rotation":
        r = s.rotation
        for f in after:
            vals = [f[b] for b in r[1:] + r[:1]]
            f.update(zip(r, vals, strict=True))
    elif s.name == "string_value":
        for f in after:
            f[s.shift_feature] = s.string_value
    elif s.name == "unknown_field":
        for f in after:
            f[s.unknown_field] = "web"
    elif s.name == "absent_feature":
        for f in after:
            del f[s.shift_feature]
    elif s.name == "duplicate_ids":
        hit = np.random.default_rng([s.seed, 6]).random(len(after)) < s.duplicate_share
        for i in np.flatnonzero(hit).tolist():
            j = s.change_at + i
            predictions[j]["event_id"] = predictions[j - 1]["event_id"]
