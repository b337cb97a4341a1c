"""Resource limits (``limits.*``, ``performance.max_open_predictions``): what happens when each is
hit, its counter, its alert, and a cardinality bomb against the engine that stays within them."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from streamwatch.alerts import describe
from streamwatch.config import Settings, load_config
from streamwatch.decode import RawMessage, Reason
from streamwatch.engine import LIMITS, Engine
from streamwatch.events import AlertEvent
from streamwatch.exporter import Exporter
from streamwatch.monitor import ModelMonitor

T0 = 1_795_774_502_000


def _settings(n_models: int = 3, **limits: Any) -> Settings:
    return Settings(
        models={f"m{i}": {"features": {"x": "numeric", "c": "categorical"}} for i in range(n_models)},
        drift={"reference_size": 50, "window_size": 50, "step": 10, "cusum": False},
        quality={"window_size": 100, "step": 10},
        performance={"max_open_predictions": 100},
        limits=limits,
    )


def _ev(i: int, model: str = "m0", c: str | None = None, **over: Any) -> bytes:
    ev = {
        "event_id": f"{model}-{i}",
        "model_id": model,
        "timestamp": T0 + 1000 * i,
        "features": {"x": float(i % 17), "c": c if c is not None else "abc"[i % 3]},
        "prediction": {"label": "yes", "scores": {"yes": 0.6, "no": 0.4}},
        **over,
    }
    return orjson.dumps(ev)


def _msgs(values: list[bytes], partition: int = 0) -> list[RawMessage]:
    return [RawMessage(v, T0 + i, "predictions", partition, i) for i, v in enumerate(values)]


def _limit_alerts(alerts: list[Any]) -> list[Any]:
    out = [a for a in alerts if a.kind == "resource_limit"]
    for a in out:
        AlertEvent.model_validate(a.to_event(T0))
        assert "limit" in describe(a.to_event(T0))
    return out


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings()
    assert (s.limits.max_message_bytes, s.limits.max_models, s.limits.max_features) == (1_048_576, 1000, 1000)
    assert (s.limits.max_category_values, s.limits.max_dead_letter_payload_bytes) == (10_000, 65_536)
    monkeypatch.setenv("STREAMWATCH_LIMITS__MAX_MODELS", "7")
    assert load_config(None, models={"m": {"features": {"a": "numeric"}}}).limits.max_models == 7


def test_message_too_large_is_dead_lettered_with_a_truncated_body_and_one_alert() -> None:
    e = Engine(_settings(max_message_bytes=4096, max_dead_letter_payload_bytes=1000))
    big = _ev(1, pad="z" * 10_000)
    r = e.process_predictions(_msgs([big, _ev(2), big]))
    assert r.events == 1 and [d.reason for d in r.dead_letters] == [Reason.MESSAGE_TOO_LARGE] * 2
    body = orjson.loads(r.dead_letters[0].body())
    assert body["payload_truncated"] and body["payload_bytes"] == len(big) and len(body["payload"]) == 1000
    assert body["model_id"] == "m0"  # sniffed from the message's head
    (a,) = _limit_alerts(r.alerts)
    assert (a.model_id, a.detector, a.statistic, a.threshold) == ("m0", "message_bytes", len(big), 4096)
    assert a.detected_at_ms == T0 and e.limit_hits["message_bytes"] == 2


def test_too_many_features_is_dead_lettered() -> None:
    e = Engine(_settings(max_features=5))
    wide = orjson.dumps(
        {
            "event_id": "w",
            "model_id": "m1",
            "features": {f"f{i}": i for i in range(6)},
            "prediction": {"label": 1},
        }
    )
    r = e.process_predictions(_msgs([wide, _ev(1)]))
    assert [d.reason for d in r.dead_letters] == [Reason.TOO_MANY_FEATURES]
    assert "6 keys" in r.dead_letters[0].detail
    (a,) = _limit_alerts(r.alerts)
    assert (a.model_id, a.detector, a.statistic, a.threshold) == ("m1", "features", 6, 5)


def test_model_limit_dead_letters_new_models_and_keeps_existing_ones() -> None:
    e = Engine(_settings(n_models=5, max_models=2))
    r = e.process_predictions(_msgs([_ev(i, f"m{i % 5}") for i in range(20)]))
    assert sorted(e.monitors) == ["m0", "m1"] and e.monitor_count() == 2
    assert r.events == 8 and len(r.dead_letters) == 12
    assert {d.reason for d in r.dead_letters} == {Reason.MODEL_LIMIT}
    assert {d.model_id for d in r.dead_letters} == {"m2", "m3", "m4"}
    assert sorted(a.model_id for a in _limit_alerts(r.alerts)) == ["m2", "m3", "m4"]
    # labels of a model beyond the limit are refused the same way; known ones pass
    labels = [
        RawMessage(
            orjson.dumps({"event_id": f"m{k}-0", "model_id": f"m{k}", "label": "no"}), T0, "labels", 0, k
        )
        for k in (0, 3)
    ]
    r = e.process_labels(labels)
    assert r.events == 1 and [d.model_id for d in r.dead_letters] == ["m3"]
    assert not _limit_alerts(r.alerts)  # once per (limit, model)
    assert e.limit_hits["models"] == 13


def _category_run(batch: int, n: int = 400, limit: int = 100) -> tuple[list[Any], Engine]:
    e = Engine(_settings(max_category_values=limit))
    values = [_ev(i, c=f"v{i}") for i in range(n)]
    alerts: list[Any] = []
    for k in range(0, n, batch):
        alerts += e.process_predictions(_msgs(values[k : k + batch])).alerts
    return alerts, e


def test_category_overflow_is_counted_and_alerts_once_at_the_same_event_however_batched() -> None:
    a1, e1 = _category_run(400)
    a2, e2 = _category_run(37)
    l1, l2 = _limit_alerts(a1), _limit_alerts(a2)
    # (the label store, capped at 100, fills too: at the same event however batched as well)
    assert [x.alert_id for x in l1] == [x.alert_id for x in l2]
    assert sorted(x.detector for x in l1) == ["category_values", "open_predictions"]
    (a,) = [x for x in l1 if x.detector == "category_values"]
    assert (a.feature, a.detector, a.threshold) == ("c", "category_values", 100)
    assert a.events_seen == 101 and a.detected_at_ms == T0 + 1000 * 100  # the 101st distinct value
    m = e1.monitors["m0"]
    assert len(m.schema.vocabularies[0]) <= 100 + 2  # values, None and the overflow code
    assert e1.limit_hits["category_values"] == e2.limit_hits["category_values"] == 300
    # the overflow is part of the state: a restored monitor does not alert again
    restored = ModelMonitor.restore(m.snapshot())
    e1.install(0, {"m0": restored})
    more = e1.process_predictions(_msgs([_ev(1000 + i, c=f"w{i}") for i in range(50)]))
    assert not _limit_alerts(more.alerts) and e1.limit_hits["category_values"] == 350


def test_label_store_cap_alerts_when_it_first_fills() -> None:
    e = Engine(_settings())  # max_open_predictions 100
    alerts: list[Any] = []
    for k in range(0, 400, 50):
        alerts += e.process_predictions(_msgs([_ev(i) for i in range(k, k + 50)])).alerts
    (a,) = _limit_alerts(alerts)
    assert (a.detector, a.threshold) == ("open_predictions", 100) and a.details["sample_rate"] < 1
    assert len(e.monitors["m0"].performance.join) <= 100  # type: ignore[union-attr]
    assert e.limit_hits["open_predictions"] > 0


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_cardinality_bomb_stays_within_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    """10^5 distinct category values and 10^4 distinct model ids through the engine."""
    s = Settings(
        models={f"m{i}": {"features": {"x": "numeric", "c": "categorical"}} for i in range(50)},
        drift={"reference_size": 200, "window_size": 200, "step": 50, "cusum": False},
        limits={"max_models": 20, "max_category_values": 1000},
    )
    e = Engine(s)
    rss0 = _rss_kib()
    n = 100_000
    for k in range(0, n, 2000):
        vals = [_ev(i, f"m{i % 10}", c=f"cat-{i}") for i in range(k, k + 2000)]
        e.process_predictions(_msgs(vals, partition=k // 2000 % 2))
    ids = [_ev(i, f"id-{i}") if i % 10 else _ev(i, f"m{i % 50}") for i in range(10_000)]
    r = e.process_predictions(_msgs(ids))
    reasons = {d.reason for d in r.dead_letters}
    assert reasons == {Reason.UNKNOWN_MODEL, Reason.MODEL_LIMIT}
    assert e.monitor_count() == 20
    vocab = max(len(v) for ms in e.owned.values() for m in ms.values() for v in m.schema.vocabularies)
    assert vocab <= 1000 + 2
    text = Exporter(e).render().decode()
    series = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    per_model = max(sum(f'model="m{i}"' in ln for ln in series) for i in range(50))
    assert per_model <= s.metrics.max_series_per_model
    hits = dict(re.findall(r'streamwatch_limit_hits_total\{limit="(\w+)"\} (\S+)', text))
    assert float(hits["category_values"]) > 0 and float(hits["models"]) > 0
    grown = (_rss_kib() - rss0) / 1024
    with capsys.disabled():
        print(
            f"\ncardinality bomb (engine): {n} distinct categories, 10000 model ids -> monitors "
            f"{e.monitor_count()}, largest vocabulary {vocab}, series {len(series)} "
            f"(max per model {per_model}), RSS grew {grown:.1f} MiB"
        )
    assert grown < 300


def test_every_limit_is_exported() -> None:
    e = Engine(_settings())
    text = Exporter(e).render().decode()
    for name in LIMITS:
        assert f'streamwatch_limit_hits_total{{limit="{name}"}} 0' in text
        assert f'streamwatch_limit{{limit="{name}"}}' in text
    assert 'streamwatch_limit_usage{limit="models"} 0' in text
    for reason in Reason.LIMITS:
        assert f'streamwatch_dead_letters_total{{reason="{reason}"}} 0' in text
