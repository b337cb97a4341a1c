"""The state topic: checkpoint records, their offset tags, restore, and the runtime's own figures.

Layout (see docs/operations.md):

* the state topic has as many partitions as the input topics; the state of input partition
  ``p`` (of both the predictions and the labels topic) lives in state partition ``p`` and is
  always produced with that explicit partition, never by key hash;
* a **model record** has key ``model_id`` and the monitor's versioned JSON snapshot
  (:meth:`~streamwatch.monitor.ModelMonitor.snapshot`) as value;
* a **checkpoint record** (key ``\\x00checkpoint``, empty JSON object) is written with every
  checkpoint that moves partition ``p``'s offsets;
* every record carries header ``sw_src``: JSON ``{topic: next offset}`` of both input
  partitions ``p`` the record is consistent with, and ``sw_kind`` (``model`` | ``checkpoint``).

Restore reads a state partition from its beginning to its end (``read_committed``; the end is
found by the partition-EOF event, not by "high watermark - 1", so transaction markers and
compacted tails cannot hang it) and keeps, per key, the record with the highest tag that is
at or below the committed offsets. Records of aborted or never-committed checkpoints, and of
zombies that wrote after they lost the partition, carry a tag beyond the committed offsets
(or below the newest valid one) and are ignored; that keeps state exact in at-least-once mode
too, where nothing is transactional.

Decoding is strict (:func:`decode_snapshot`): a model record must be JSON (never pickle or
code), of this build's snapshot format and version, of the model its key names, with the known
fields only, and of the configured features and drift settings, before a monitor is built from
it. A record that fails (garbage, truncated, foreign, another version, another model's state,
or without streamwatch's headers) is skipped and reported as a :class:`StateProblem`: the
worker publishes a ``state_corrupt`` alert and counts it, and the model starts afresh.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamwatch.alerts import Alert
from streamwatch.monitor import READABLE_VERSIONS, SNAPSHOT_FORMAT, ModelMonitor

log = logging.getLogger("streamwatch.state")

CHECKPOINT_KEY = b"\x00checkpoint"
KIND_MODEL = b"model"
KIND_CHECKPOINT = b"checkpoint"
H_SRC = "sw_src"
H_KIND = "sw_kind"

Tag = dict[str, int]  # input topic -> next offset

# why a state record was not restored: the first six mean the record is not what this build
# wrote (alert + counter); the last two are normal after a config change (a warning only)
CORRUPT_REASONS = (
    "bad_headers",  # no valid sw_src / sw_kind headers: not written by streamwatch
    "not_json",  # garbage or truncated bytes
    "foreign_format",  # JSON, but not a streamwatch model snapshot
    "unsupported_version",  # a snapshot of another format version
    "wrong_model",  # the snapshot of another model than the record's key
    "invalid_snapshot",  # the right envelope, but fields missing, unknown or of the wrong shape
)
CONFIG_REASONS = ("unconfigured", "config_changed")
_DETAIL_CHARS = 300
_ALERT_NAMESPACE = uuid.UUID("0d5f4a52-6c1e-4f57-a8f4-5b1f1d9c3e21")


class RestoreError(RuntimeError):
    """The state topic could not be read to its end in time."""


def headers(tag: Mapping[str, int], kind: bytes) -> list[tuple[str, bytes]]:
    return [(H_SRC, orjson.dumps(dict(tag))), (H_KIND, kind)]


def parse_headers(hdrs: Any) -> tuple[Tag | None, bytes]:
    tag: Tag | None = None
    kind = KIND_MODEL
    for k, raw in hdrs.items() if isinstance(hdrs, dict) else hdrs or ():
        v = raw.encode() if isinstance(raw, str) else raw
        if k == H_SRC and v:
            try:
                doc = orjson.loads(v)
            except orjson.JSONDecodeError:
                return None, kind
            if isinstance(doc, dict) and all(isinstance(o, int) for o in doc.values()):
                tag = {str(t): int(o) for t, o in doc.items()}
        elif k == H_KIND and v:
            kind = v
    return tag, kind


def tag_ok(tag: Mapping[str, int], committed: Mapping[str, int]) -> bool:
    """A record is valid when each input offset it is consistent with has been committed."""
    return bool(committed) and set(tag) == set(committed) and all(tag[t] <= committed[t] for t in tag)


def _rank(tag: Mapping[str, int]) -> int:
    # the tags of one owner grow in every component; across a handover the newest valid
    # state is the one that had consumed the most
    return sum(tag.values())


class StateRecordError(ValueError):
    """A model record that cannot be restored; ``reason`` is one of CORRUPT_REASONS or CONFIG_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:_DETAIL_CHARS]

    @property
    def corrupt(self) -> bool:
        return self.reason in CORRUPT_REASONS


@dataclass(frozen=True)
class StateProblem:
    """A state record skipped because it is not what this build wrote (see CORRUPT_REASONS)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the record's Kafka timestamp (0 if it has none)
    key: str
    reason: str
    detail: str
    size: int

    @property
    def alert_id(self) -> str:
        # one id per record: finding the same record again (rewind, restart) repeats the id,
        # which consumers de-duplicate; another bad record gets another id
        return str(uuid.uuid5(_ALERT_NAMESPACE, f"{self.topic}|{self.partition}|{self.offset}"))

    def alert(self) -> Alert:
        """The ``state_corrupt`` alert (its ``alert_id`` is :attr:`alert_id`, see :meth:`event`)."""
        return Alert(
            model_id=self.key or "(no key)",
            model_version=None,
            kind="state_corrupt",
            feature=None,
            detector="state_decoder",
            status="firing",
            severity="warning",
            statistic=1.0,
            threshold=0.0,
            detected_at_ms=self.timestamp_ms,
            change_started_at_ms=None,
            events_seen=0,
            message=(
                f"State record {self.topic}[{self.partition}]@{self.offset} (key {self.key!r}) was "
                f"skipped ({self.reason}: {self.detail}); its model starts afresh."
            ),
            details={
                "reason": self.reason,
                "detail": self.detail,
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "bytes": self.size,
            },
        )

    def event(self, observed_at_ms: int) -> dict[str, Any]:
        """The alert event of ``schemas/alert.schema.json``, with the per-record ``alert_id``."""
        return {**self.alert().to_event(observed_at_ms), "alert_id": self.alert_id}


@dataclass
class RestoredPartition:
    partition: int
    committed: Tag
    records: dict[str, bytes] = field(default_factory=dict)  # model_id -> snapshot
    read: int = 0
    skipped: int = 0
    checkpoint_seen: bool = False
    bytes: int = 0
    # model_id -> (offset, timestamp ms) of the record in `records`, to report it if it is bad
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    problems: list[StateProblem] = field(default_factory=list)  # records without valid headers


def read_state(
    consumer: Consumer,
    topic: str,
    committed: Mapping[int, Tag],
    timeout: float,
    wait_for_checkpoint: float = 0.0,
) -> dict[int, RestoredPartition]:
    """Read state partitions ``committed.keys()`` to their end and keep the valid records.

    ``committed[p]`` holds the committed next offsets of input partition ``p`` by topic (an
    empty mapping: nothing committed, so no record is valid). With ``wait_for_checkpoint`` > 0
    (exactly-once mode) a partition whose committed offsets exist is read past its end for up
    to that many seconds until the checkpoint record of exactly those offsets shows up: the
    transaction that committed the offsets has written it, and its marker may reach the state
    partition a moment after the offsets became visible.
    """
    out = {p: RestoredPartition(p, dict(c)) for p, c in committed.items()}
    if not out:
        return out
    best: dict[tuple[int, str], tuple[int, bytes, int, int]] = {}  # rank, value, offset, timestamp
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in out])
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    eof_at: float | None = None
    try:
        while True:
            for m in consumer.consume(10_000, 0.05):
                p = m.partition()
                if p is None or p not in out:
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(p)
                        continue
                    raise KafkaException(err)
                at_end.discard(p)
                rp = out[p]
                rp.read += 1
                value = m.value()
                tag, kind = parse_headers(m.headers())
                if tag is None or kind not in (KIND_MODEL, KIND_CHECKPOINT):
                    rp.skipped += 1
                    if value is not None:  # a tombstone without headers is someone's clean-up
                        why = "no valid sw_src/sw_kind headers (not a streamwatch record)"
                        rp.problems.append(_problem(topic, m, "bad_headers", why))
                    continue
                if not tag_ok(tag, rp.committed):
                    rp.skipped += 1
                    continue
                if kind == KIND_CHECKPOINT:
                    if tag == rp.committed:
                        rp.checkpoint_seen = True
                    continue
                key = (m.key() or b"").decode("utf-8", "replace")
                if value is None:  # a tombstone: the model's state was deleted
                    best.pop((p, key), None)
                    continue
                r = _rank(tag)
                old = best.get((p, key))
                if old is None or r >= old[0]:
                    best[(p, key)] = (r, value, m.offset() or 0, _timestamp(m))
            if at_end >= set(out):
                waiting = [
                    p
                    for p, rp in out.items()
                    if wait_for_checkpoint and rp.committed and not rp.checkpoint_seen
                ]
                if not waiting:
                    break
                now = time.monotonic()
                eof_at = eof_at or now
                if now - eof_at >= wait_for_checkpoint:
                    log.warning(
                        "no checkpoint record matches the committed offsets of state partitions %s; "
                        "using the newest valid records (offsets committed by another tool or version?)",
                        waiting,
                        extra={"event": "restore", "partitions": waiting},
                    )
                    break
            if time.monotonic() > deadline:
                missing = sorted(set(out) - at_end)
                raise RestoreError(
                    f"state topic {topic} partitions {missing} not read to the end in {timeout} s"
                )
    finally:
        consumer.unassign()
    for (p, key), (_, value, offset, ts) in best.items():
        out[p].records[key] = value
        out[p].positions[key] = (offset, ts)
        out[p].bytes += len(value)
    return out


def _timestamp(m: Any) -> int:
    kind, ts = m.timestamp()
    return int(ts) if kind != 0 and ts >= 0 else 0


def _problem(topic: str, m: Any, reason: str, detail: str) -> StateProblem:
    return StateProblem(
        topic,
        m.partition() or 0,
        m.offset() or 0,
        _timestamp(m),
        (m.key() or b"").decode("utf-8", "replace")[:256],
        reason,
        detail,
        len(m.value() or b""),
    )


def decode_snapshot(key: str, data: bytes, fresh: ModelMonitor) -> ModelMonitor:
    """The monitor of model ``key`` from its state record, checked strictly first.

    ``fresh`` is a new monitor of the configured model: the snapshot must have its features and
    drift settings (checked before anything is built from the record, so a foreign document
    cannot make the worker allocate what it says) and no fields a snapshot of this version
    does not have. Raises :class:`StateRecordError`; never anything else.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise StateRecordError("not_json", f"not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise StateRecordError("foreign_format", f"not a {SNAPSHOT_FORMAT} snapshot (format {got!r})")
    version = doc.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise StateRecordError(
            "unsupported_version",
            f"snapshot version {version!r}; this build reads {', '.join(map(str, READABLE_VERSIONS))}",
        )
    if doc.get("model_id") != key:
        raise StateRecordError(
            "wrong_model", f"the snapshot of model {doc.get('model_id')!r} under key {key!r}"
        )
    known = fresh._to_doc().keys()
    unknown = sorted(str(k) for k in doc if k not in known)
    if unknown:
        raise StateRecordError("invalid_snapshot", f"unknown fields {unknown[:5]}")
    if doc.get("features") != {k: v.value for k, v in fresh.features.items()} or doc.get(
        "settings"
    ) != fresh.settings.model_dump(mode="json"):
        raise StateRecordError("config_changed", "its features or drift settings changed")
    try:
        m = ModelMonitor._from_doc(doc)
    except Exception as e:  # any shape error of a crafted document: skip it, never crash on it
        raise StateRecordError("invalid_snapshot", f"{type(e).__name__}: {e}") from None
    if m.features != fresh.features or m.settings != fresh.settings:
        raise StateRecordError("config_changed", "its features or drift settings changed")
    return m


@dataclass
class RestoredMonitors:
    """What :func:`restore_monitors` made of one state partition."""

    monitors: dict[str, ModelMonitor] = field(default_factory=dict)
    problems: list[StateProblem] = field(default_factory=list)  # corrupt or foreign records
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (model, why): config changes


def restore_monitors(
    rp: RestoredPartition,
    topic: str,
    configured: Container[str],
    new_monitor: Callable[[str], ModelMonitor],
) -> RestoredMonitors:
    """Decode the records :func:`read_state` kept for one partition (in offset order).

    Models that are no longer configured, or whose features or drift settings changed, are
    dropped (``dropped``); corrupt and foreign records are reported in ``problems`` together
    with the partition's records without valid headers.
    """
    out = RestoredMonitors(problems=list(rp.problems))
    for key in sorted(rp.records, key=lambda k: rp.positions.get(k, (0, 0))[0]):
        data = rp.records[key]
        offset, ts = rp.positions.get(key, (0, 0))
        if key not in configured:
            out.dropped.append((key, "the model is no longer configured"))
            continue
        try:
            out.monitors[key] = decode_snapshot(key, data, new_monitor(key))
        except StateRecordError as e:
            if e.corrupt:
                out.problems.append(
                    StateProblem(topic, rp.partition, offset, ts, key, e.reason, e.detail, len(data))
                )
            else:
                out.dropped.append((key, e.detail))
    out.problems.sort(key=lambda q: q.offset)
    return out


@dataclass
class Timing:
    """Count, sum, last and largest duration of one kind of step, plus cumulative-able buckets."""

    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

    count: int = 0
    total: float = 0.0
    last: float = 0.0
    max: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(Timing.BOUNDS) + 1))

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.last = seconds
        self.max = max(self.max, seconds)
        i = 0
        while i < len(self.BOUNDS) and seconds > self.BOUNDS[i]:
            i += 1
        self.buckets[i] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.total,
            "last": self.last,
            "max": self.max,
            "buckets": dict(zip([*map(str, self.BOUNDS), "+Inf"], self.buckets, strict=True)),
        }


@dataclass
class RuntimeStats:
    """What the Kafka runtime did, for the exporter: read it with :meth:`as_dict` (thread-safe).

    ``committed_counts`` holds, per (partition, model), the events and labels counted in the
    state of the last committed checkpoint: counters rendered from it never go backwards,
    even when a transaction aborts and the worker reprocesses.
    """

    mode: str = "exactly_once"
    checkpoints: int = 0  # committed checkpoints that moved offsets or state
    checkpoint: Timing = field(default_factory=Timing)  # snapshot + produce + commit
    commit: Timing = field(default_factory=Timing)  # send_offsets + commit_transaction (or commit)
    restore: Timing = field(default_factory=Timing)  # committed offsets + state read + monitors
    restored_models: int = 0
    restored_bytes: int = 0
    state_records: int = 0  # model records written
    state_bytes: int = 0
    aborts: int = 0  # transactions aborted (then state rewound to the last commit)
    commit_failures: int = 0  # at-least-once commits that failed (retried at the next checkpoint)
    offset_resets: int = 0  # committed offsets older than the retention: data was lost
    rebalances: int = 0
    state_corrupt: dict[str, int] = field(default_factory=dict)  # reason -> state records skipped
    assigned: list[tuple[str, int]] = field(default_factory=list)  # input partitions held
    owned: list[int] = field(default_factory=list)  # partitions whose state this worker owns
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # messages behind the high watermark
    committed_counts: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "mode": self.mode,
                "checkpoints": self.checkpoints,
                "checkpoint_seconds": self.checkpoint.as_dict(),
                "commit_seconds": self.commit.as_dict(),
                "restore_seconds": self.restore.as_dict(),
                "restored_models": self.restored_models,
                "restored_bytes": self.restored_bytes,
                "state_records": self.state_records,
                "state_bytes": self.state_bytes,
                "aborts": self.aborts,
                "commit_failures": self.commit_failures,
                "offset_resets": self.offset_resets,
                "rebalances": self.rebalances,
                "state_corrupt": dict(self.state_corrupt),
                "assigned": list(self.assigned),
                "owned": list(self.owned),
                "lag": dict(self.lag),
                "committed_counts": dict(self.committed_counts),
            }


__all__ = [
    "CHECKPOINT_KEY",
    "CONFIG_REASONS",
    "CORRUPT_REASONS",
    "RestoreError",
    "RestoredMonitors",
    "RestoredPartition",
    "RuntimeStats",
    "StateProblem",
    "StateRecordError",
    "Timing",
    "decode_snapshot",
    "headers",
    "parse_headers",
    "read_state",
    "restore_monitors",
    "tag_ok",
]
