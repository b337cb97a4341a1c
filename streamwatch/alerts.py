"""Alerts and their lifecycle: one ``firing`` per condition until it ``resolved``.

Everything here depends only on event content and event time; the wall-clock ``observed_at``
is stamped by the shell that publishes the alert, so a replay reproduces the same alerts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from streamwatch.events import format_timestamp

_NAMESPACE = uuid.UUID("6b1c2a2e-6f0e-4c53-9d3c-2f1f3c5e7a10")

Status = Literal["firing", "resolved"]


@dataclass(slots=True, frozen=True)
class Alert:
    model_id: str
    model_version: str | None
    kind: str
    feature: str | None
    detector: str
    status: Status
    severity: str
    statistic: float
    threshold: float
    detected_at_ms: int
    change_started_at_ms: int | None
    events_seen: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        """Stable across replays, so consumers can de-duplicate at-least-once deliveries."""
        key = f"{self.model_id}|{self.kind}|{self.feature}|{self.detector}|{self.status}|{self.events_seen}"
        return str(uuid.uuid5(_NAMESPACE, key))

    def to_event(self, observed_at_ms: int) -> dict[str, Any]:
        """The alert event of ``schemas/alert.schema.json``."""
        return {
            "alert_id": self.alert_id,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "kind": self.kind,
            "feature": self.feature,
            "detector": self.detector,
            "status": self.status,
            "severity": self.severity,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "detected_at": format_timestamp(self.detected_at_ms),
            "change_started_at": (
                None if self.change_started_at_ms is None else format_timestamp(self.change_started_at_ms)
            ),
            "events_seen": self.events_seen,
            "observed_at": format_timestamp(observed_at_ms),
            "message": self.message,
            "details": self.details,
        }


# wide enough for every kind (prediction_drift, resource_limit, ...), so columns line up
_KIND_WIDTH = 16


def describe(alert_event: dict[str, Any]) -> str:
    """One readable line for a terminal (the kind padded so that alerts line up)."""
    where = (
        f"{alert_event['model_id']}/{alert_event['feature']}"
        if alert_event.get("feature")
        else alert_event["model_id"]
    )
    began = alert_event.get("change_started_at")
    if alert_event["kind"] == "resource_limit":  # a count against a setting, not a statistic
        return (
            f"[{alert_event['status'].upper():8}] {alert_event['kind']:<{_KIND_WIDTH}} {where:<28} "
            f"{alert_event['detector']} {alert_event['statistic']:.0f} "
            f"> limit {alert_event['threshold']:.0f} "
            f"({alert_event['details'].get('setting', '')}) detected {alert_event['detected_at']}"
        )
    if alert_event["kind"] == "state_corrupt":  # a skipped state record, not a statistic
        d = alert_event["details"]
        return (
            f"[{alert_event['status'].upper():8}] {alert_event['kind']:<{_KIND_WIDTH}} {where:<28} "
            f"{d.get('reason')} at {d.get('topic')}[{d.get('partition')}]@{d.get('offset')}: state skipped"
        )
    return (
        f"[{alert_event['status'].upper():8}] {alert_event['kind']:<{_KIND_WIDTH}} {where:<28} "
        f"{alert_event['detector']}={alert_event['statistic']:.3f} "
        f"(threshold {alert_event['threshold']:.3f}) "
        f"detected {alert_event['detected_at']}" + (f", began ~{began}" if began else "")
    )
