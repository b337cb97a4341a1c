"""streamwatch.logs: JSON lines that parse, extras as fields, secrets masked, exceptions rendered."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamwatch.logs import REDACTED, configure_logging, is_secret_key, redact


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _capture(fmt: str = "json", level: str = "info") -> io.StringIO:
    buf = io.StringIO()
    configure_logging(level, fmt, stream=buf)
    return buf


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_line_has_core_fields_and_extras() -> None:
    buf = _capture()
    logging.getLogger("streamwatch.kafka").info(
        "checkpoint done", extra={"event": "checkpoint", "models": 3, "seconds": 0.41, "topics": ["a", "b"]}
    )
    [rec] = _lines(buf)
    assert list(rec)[:4] == ["ts", "level", "logger", "message"]
    assert rec["level"] == "info" and rec["logger"] == "streamwatch.kafka"
    assert rec["message"] == "checkpoint done"
    assert rec["event"] == "checkpoint" and rec["models"] == 3 and rec["seconds"] == 0.41
    assert rec["topics"] == ["a", "b"]
    # RFC 3339, UTC, milliseconds, and now
    assert rec["ts"].endswith("Z") and len(rec["ts"]) == len("2026-11-27T04:08:46.222Z")
    ts = dt.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00"))
    assert ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - ts).total_seconds()) < 60
    assert "exception" not in rec


def test_one_line_per_record_even_with_newlines() -> None:
    buf = _capture()
    log = logging.getLogger("streamwatch")
    log.warning("line one\nline two", extra={"detail": "a\nb"})
    log.info("%s events from %s", 12, "predictions")
    recs = _lines(buf)
    assert len(recs) == 2 and len(buf.getvalue().splitlines()) == 2
    assert recs[0]["message"] == "line one\nline two" and recs[0]["level"] == "warning"
    assert recs[1]["message"] == "12 events from predictions"


def test_level_filters_records() -> None:
    buf = _capture(level="WARNING")
    log = logging.getLogger("streamwatch.test")
    log.info("hidden")
    log.debug("hidden too")
    log.error("shown")
    assert [r["message"] for r in _lines(buf)] == ["shown"]
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "sasl.password",
        "SASL_PASSWORD",
        "sasl.username",
        "sasl.jaas.config",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl_keystore_password",
        "api_token",
        "client_secret",
        "token",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["bootstrap.servers", "security.protocol", "group_id", "models", "ssl.ca.location", "event"]
)
def test_plain_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_secrets_are_redacted_in_extras_and_nested_dicts() -> None:
    buf = _capture()
    client = {
        "bootstrap.servers": "kafka:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "streamwatch",
        "sasl.password": "hunter2",
        "ssl.key.password": "hunter3",
        "nested": {"api_token": "hunter4", "list": [{"secret": "hunter5", "ok": 1}]},
    }
    logging.getLogger("streamwatch").info(
        "connecting", extra={"client": client, "password": "hunter6", "sasl_password": "hunter7"}
    )
    out = buf.getvalue()
    for secret in ("hunter2", "hunter3", "hunter4", "hunter5", "hunter6", "hunter7"):
        assert secret not in out
    [rec] = _lines(buf)
    assert rec["password"] == REDACTED and rec["sasl_password"] == REDACTED
    c = rec["client"]
    assert c["bootstrap.servers"] == "kafka:9092" and c["security.protocol"] == "SASL_SSL"
    assert c["sasl.password"] == REDACTED and c["sasl.username"] == REDACTED
    assert c["ssl.key.password"] == REDACTED
    assert c["nested"]["api_token"] == REDACTED
    assert c["nested"]["list"] == [{"secret": REDACTED, "ok": 1}]
    assert client["sasl.password"] == "hunter2", "the caller's dict must not be changed"


def test_secrets_in_message_arguments_are_redacted() -> None:
    buf = _capture("text")
    log = logging.getLogger("streamwatch")
    log.info("client %s", {"sasl.password": "hunter2", "bootstrap.servers": "b:9092"})
    log.info("clients %s and %s", [{"token": "hunter3"}], ("x", {"secret": "hunter4"}))
    out = buf.getvalue()
    assert "hunter" not in out
    assert "b:9092" in out and REDACTED in out


def test_exception_is_rendered_as_a_string() -> None:
    buf = _capture()
    log = logging.getLogger("streamwatch.kafka")
    try:
        raise RuntimeError("broker went away")
    except RuntimeError:
        log.exception("delivery failed", extra={"event": "error", "topic": "alerts"})
    [rec] = _lines(buf)
    assert rec["level"] == "error" and rec["message"] == "delivery failed" and rec["event"] == "error"
    assert isinstance(rec["exception"], str)
    assert rec["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: broker went away" in rec["exception"]


def test_unusual_values_still_give_json() -> None:
    buf = _capture()
    logging.getLogger("streamwatch").info(
        "odd values",
        extra={
            "path": Path("/tmp/x"),
            "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "count": np.int64(7),
            "score": np.float64(0.5),
            "names": {"b", "a"},
            "huge": 2**70,
            "nan": float("nan"),
            "obj": object(),
        },
    )
    [rec] = _lines(buf)
    assert rec["path"] == "/tmp/x" and rec["count"] == 7 and rec["score"] == 0.5
    assert rec["when"].startswith("2026-01-02T03:04:05")
    assert rec["names"] == ["a", "b"] and int(rec["huge"]) == 2**70
    assert rec["obj"].startswith("<object object")


def test_extras_cannot_overwrite_core_fields() -> None:
    buf = _capture()
    logging.getLogger("streamwatch").info("hello", extra={"level": "fake", "ts": "yesterday", "logger": "x"})
    [rec] = _lines(buf)
    assert rec["level"] == "info" and rec["logger"] == "streamwatch" and rec["ts"] != "yesterday"
    assert rec["level_"] == "fake" and rec["ts_"] == "yesterday" and rec["logger_"] == "x"


def test_text_format() -> None:
    buf = _capture("text")
    log = logging.getLogger("streamwatch.kafka")
    log.info("checkpoint done", extra={"event": "checkpoint", "models": 3, "note": "two words", "pw": 1})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("boom", extra={"password": "hunter2"})
    first, *rest = buf.getvalue().splitlines()
    ts, level, rest_of_line = first.split(" ", 2)
    assert ts.endswith("Z") and level == "INFO"
    assert (
        rest_of_line == 'streamwatch.kafka: checkpoint done event=checkpoint models=3 note="two words" pw=1'
    )
    text = "\n".join(rest)
    assert "boom password=***" in text and "hunter2" not in text
    assert "ZeroDivisionError" in text


def test_configure_twice_replaces_the_handler() -> None:
    first = _capture()
    second = _capture()
    logging.getLogger("streamwatch").info("once")
    assert first.getvalue() == "" and len(_lines(second)) == 1
    assert len(logging.getLogger().handlers) == 1


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "xml")])
def test_bad_settings_are_named(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="use one of"):
        configure_logging(level, fmt)


def test_redact_leaves_non_containers_alone() -> None:
    assert redact("sasl.password") == "sasl.password"
    assert redact(3) == 3
    assert redact(({"token": 1},)) == ({"token": REDACTED},)
