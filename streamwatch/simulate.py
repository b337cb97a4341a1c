"""Synthetic prediction and label events with known, injected changes (and their ground truth).

The same generator feeds the demo, the end-to-end tests and the benchmarks, so every one of
them knows exactly where a detector should fire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    "covariate_shift",
    "concept_drift",
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
)
DEFAULT_START_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z: a fixed start keeps runs identical


def numeric_names(n: int) -> list[str]:
    return [NUMERIC_NAMES[i] if i < len(NUMERIC_NAMES) else f"x{i}" for i in range(n)]


@dataclass
class Scenario:
    """Parameters of one simulated stream; ``truth()`` says what was injected where."""

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
            raise ValueError("numeric_features must be between 1 and 50")
        self.features = numeric_names(self.numeric_features)
        uses = (
            "mean_shift",
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

    def time_ms(self, i: int) -> int:
        return self.start_ms + int(i * 1000 / self.rate_per_second)

    def config(self) -> dict[str, Any]:
        """The ``models`` entry a streamwatch config needs for this stream."""
        feats: dict[str, str] = {n: "numeric" for n in self.features}
        feats["country"] = "categorical"
        return {self.model_id: {"features": feats}}

    def truth(self) -> dict[str, Any]:
        changes = []
        at = {"start_index": self.change_at, "start_time": format_timestamp(self.time_ms(self.change_at))}
        if self.name == "mean_shift":
            changes.append(
                {
                    "kind": "data_drift",
                    "feature": self.shift_feature,
                    "change": f"mean + {self.shift_sigmas} standard deviations",
                    **at,
                }
            )
        elif self.name == "covariate_shift":
            changes.append(
                {
                    "kind": "data_drift",
                    "feature": self.shift_feature,
                    "change": f"mean moved {self.shift_sigmas} sd away from the decision boundary "
                    "(accuracy does not drop)",
                    **at,
                }
            )
        elif self.name == "concept_drift":
            changes.append(
                {
                    "kind": "concept_drift",
                    "feature": None,
                    "change": f"labels flip where {self.features[0]} is above its mean; inputs unchanged",
                    **at,
                }
            )
        elif self.name == "unit_change":
            changes.append(
                {
                    "kind": "unit_change",
                    "feature": self.shift_feature,
                    "change": f"value * {self.unit_factor:g} + {self.unit_offset:g}",
                    **at,
                }
            )
        elif self.name == "column_swap":
            changes.append(
                {
                    "kind": "column_swap",
                    "feature": ",".join(sorted([self.shift_feature, self.swap_with])),
                    "change": f"{self.shift_feature} and {self.swap_with} swapped",
                    **at,
                }
            )
        elif self.name == "new_category":
            changes.append(
                {
                    "kind": "new_category",
                    "feature": "country",
                    "change": f"new value {self.new_category!r} at {self.new_category_share:.1%} share",
                    **at,
                }
            )
        elif self.name == "missing_feature":
            changes.append(
                {"kind": "data_quality", "feature": self.shift_feature, "change": "always null", **at}
            )
        elif self.name == "column_rotation":
            r = self.rotation
            moves = ", ".join(f"{a} <- {b}" for a, b in zip(r, r[1:] + r[:1], strict=True))
            changes.append({"kind": "column_swap", "feature": ",".join(sorted(r)), "change": moves, **at})
        elif self.name == "string_value":
            changes.append(
                {
                    "kind": "data_quality",
                    "feature": self.shift_feature,
                    "change": f"the string {self.string_value!r} instead of a number",
                    **at,
                }
            )
        elif self.name == "unknown_field":
            changes.append(
                {"kind": "schema", "feature": self.unknown_field, "change": "an undeclared field", **at}
            )
        elif self.name == "absent_feature":
            changes.append(
                {"kind": "schema", "feature": self.shift_feature, "change": "the key is not sent", **at}
            )
        elif self.name == "duplicate_ids":
            changes.append(
                {
                    "kind": "data_quality",
                    "feature": None,
                    "change": f"{self.duplicate_share:.0%} of events repeat the previous event's id",
                    **at,
                }
            )
        return {
            "scenario": self.name,
            "model_id": self.model_id,
            "events": self.events,
            "seed": self.seed,
            "features": [*self.features, "country"],
            "changes": changes,
        }


def generate(s: Scenario) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prediction events in time order, and label events (for ``label_share`` of them) in time order."""
    rng = np.random.default_rng(s.seed)
    n, k = s.events, s.numeric_features
    z = rng.standard_normal((n, k))
    if s.name == "mean_shift":
        z[s.change_at :, s.features.index(s.shift_feature)] += s.shift_sigmas
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P)
    weights = rng.normal(0, 1, k)
    if s.name == "covariate_shift":  # towards a confident "reject": further from the boundary
        j = s.features.index(s.shift_feature)
        z[s.change_at :, j] += s.shift_sigmas * np.sign(weights[j])
    scales = [NUMERIC_SCALES[i] if i < len(NUMERIC_SCALES) else (0.0, 1.0) for i in range(k)]
    x = z * np.array([sd for _, sd in scales]) + np.array([mu for mu, _ in scales])
    p_reject = 1 / (1 + np.exp(-(z @ weights) / np.sqrt(k) - 1.0))
    truth_reject = rng.random(n) < p_reject
    if s.name == "concept_drift":  # P(y|x) changes in one region; the inputs do not
        region = np.arange(n) >= s.change_at
        region &= z[:, 0] > 0
        truth_reject[region] = ~truth_reject[region]
    labelled = rng.random(n) < s.label_share
    delays = rng.exponential(s.label_delay_seconds * 1000, n).astype(np.int64)

    predictions: list[dict[str, Any]] = []
    labels: list[tuple[int, dict[str, Any]]] = []
    names = s.features
    for i in range(n):
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
    _plant_discrepancy(s, predictions)
    return predictions, [e for _, e in labels]


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
