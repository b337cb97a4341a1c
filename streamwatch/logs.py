"""Structured logs: one JSON object a line (or plain text) on stderr, with secrets masked.

Call :func:`configure_logging` once at start. Everything else logs with the standard library and
puts the facts that matter in ``extra``; they become fields of the JSON line::

    log = logging.getLogger("streamwatch.kafka")
    log.info("checkpoint done", extra={"event": "checkpoint", "models": 3, "seconds": 0.41})

gives::

    {"ts":"2026-11-27T04:08:46.222Z","level":"info","logger":"streamwatch.kafka",
     "message":"checkpoint done","event":"checkpoint","models":3,"seconds":0.41}

(on one line). ``ts`` is RFC 3339 in UTC with milliseconds; an exception (``log.exception`` or
``exc_info=``) is rendered as a string in ``exception``. Any field whose key names a secret (it
contains ``password``, ``secret`` or ``token``, or starts with ``sasl.`` or ``ssl.key``; ``_`` counts
as ``.``) is written as ``***``, in ``extra`` fields, in dicts nested in them and in dicts passed
as ``%s`` arguments of the message; pydantic models (the settings) are dumped and redacted the
same way, and their ``SecretStr`` fields show as ``**********``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import sys
from collections.abc import Mapping
from typing import IO, Any, Final, Literal, get_args

import orjson

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["json", "text"]
LEVELS: Final[tuple[str, ...]] = get_args(LogLevel)
FORMATS: Final[tuple[str, ...]] = get_args(LogFormat)

REDACTED: Final = "***"
_SECRET_WORDS: Final = ("password", "secret", "token")
_SECRET_PREFIXES: Final = ("sasl.", "ssl.key")
_MAX_DEPTH: Final = 8

# attributes every LogRecord has; anything else on a record came from `extra`
_RECORD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_CORE_FIELDS: Final = ("ts", "level", "logger", "message", "exception", "stack")


def is_secret_key(key: object) -> bool:
    """True for keys whose values are never logged: ``sasl.password``, ``SASL_USERNAME``, ``api_token``..."""
    k = str(key).lower().replace("_", ".")
    return any(w in k for w in _SECRET_WORDS) or k.startswith(_SECRET_PREFIXES)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with the values of secret keys replaced by ``***``, in nested dicts and
    lists too (other values are returned as they are)."""
    if _depth > _MAX_DEPTH:
        return value
    if hasattr(value, "model_dump") and not isinstance(value, type):
        # a pydantic model (e.g. the settings): its str() would show dict fields such as
        # kafka.client in clear; dumped, those are redacted like any mapping (SecretStr stays masked)
        value = value.model_dump()
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(k) else redact(v, _depth + 1)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v, _depth + 1) for v in value)
    return value


def _timestamp(created: float) -> str:
    t = dt.datetime.fromtimestamp(created, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()`` with dict arguments redacted first."""
    args = record.args
    if isinstance(args, Mapping):
        args = redact(args)
    elif isinstance(args, tuple) and any(
        isinstance(a, Mapping | list | tuple) or hasattr(a, "model_dump") for a in args
    ):
        args = tuple(redact(a) for a in args)
    if args is record.args:
        return record.getMessage()
    msg = str(record.msg)
    try:
        return msg % args if args else msg
    except (TypeError, ValueError):  # the same mistake getMessage() would have raised on
        return f"{msg} {args!r}"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: (REDACTED if is_secret_key(k) else redact(v))
        for k, v in record.__dict__.items()
        if k not in _RECORD_ATTRS and not k.startswith("_")
    }


def _jsonable(value: Any) -> Any:
    """Fallback for values orjson does not know (sets, Paths, Decimals, objects)."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the extras, exception, stack."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        for k, v in _extras(record).items():
            out[f"{k}_" if k in _CORE_FIELDS else k] = v
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(
                out,
                default=_jsonable,
                option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
            ).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits
            return json.dumps(_plain(out), ensure_ascii=False, separators=(",", ":"))


def _plain(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON types for the standard library's encoder (the slow path)."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalars and arrays
        with contextlib.suppress(TypeError, ValueError):
            value = value.tolist()
    if isinstance(value, Mapping) and _depth <= _MAX_DEPTH:
        out: Any = {str(k): _plain(v, _depth + 1) for k, v in value.items()}
    elif isinstance(value, list | tuple | set | frozenset) and _depth <= _MAX_DEPTH:
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        out = [_plain(v, _depth + 1) for v in items]
    elif isinstance(value, float):
        out = value if math.isfinite(value) else None
    elif value is None or isinstance(value, bool | int | str):
        out = value
    elif isinstance(value, dt.datetime | dt.date | dt.time):
        out = value.isoformat()
    else:
        out = str(value)
    return out


def _text_value(v: Any) -> str:
    """Strings as they are unless they need quotes; everything else as JSON."""
    if isinstance(v, str) and v and not any(c.isspace() or c in "\"'=" for c in v):
        return v
    try:
        return orjson.dumps(v, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(_plain(v), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-27T04:08:46.222Z INFO streamwatch.kafka: checkpoint done event=checkpoint models=3``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created)} {record.levelname} {record.name}: {_message(record)}"
        for k, v in _extras(record).items():
            line += f" {k}={_text_value(v)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _StreamwatchHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Send every logger's records at ``level`` or above to ``stream`` (stderr) as JSON lines
    (``fmt="json"``) or text (``fmt="text"``).

    Replaces the root logger's handlers, like ``logging.basicConfig(force=True)``, so it can be
    called again (e.g. after the config file was read). Raises ValueError on an unknown level
    or format, naming the valid ones.
    """
    lvl = str(level).lower()
    if lvl not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    form = str(fmt).lower()
    if form not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = _StreamwatchHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, _StreamwatchHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(lvl.upper())
