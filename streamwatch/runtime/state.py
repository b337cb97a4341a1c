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
  partitions ``p`` the record is consistent with, and ``sw_kind`` (``model`` | ``part`` |
  ``checkpoint``).

Large snapshots (:func:`encode_model_record`): a snapshot larger than one part is
zlib-compressed (header ``sw_enc: zlib``; smaller ones stay plain, readable JSON, which the
producer's lz4 compresses off the interpreter's lock), and an (encoded) value larger than the
part size is split into parts produced in the same checkpoint with the same ``sw_src``: the
model record (key ``model_id``, header ``sw_parts: n`` and ``sw_crc``: the CRC-32 of the whole
value) holds part 0 and **part records** (``sw_kind: part``, key ``model_id\\x00part\\x00i``)
hold parts ``1 .. n-1``. Part keys a model no longer needs are tombstoned in the same
checkpoint, so compaction removes them.

Restore reads a state partition from its beginning to its end (``read_committed``; the end is
found by the partition-EOF event, not by "high watermark - 1", so transaction markers and
compacted tails cannot hang it) and keeps, per key, the record with the highest tag that is
at or below the committed offsets. Records of aborted or never-committed checkpoints, and of
zombies that wrote after they lost the partition, carry a tag beyond the committed offsets
(or below the newest valid one) and are ignored; that keeps state exact in at-least-once mode
too, where nothing is transactional.

Restore reassembles a split record only from parts with exactly the model record's tag (and
CRC), and decompresses with a bound (:data:`MAX_SNAPSHOT_BYTES`); an incomplete or mismatched
set (``bad_parts``) or a value that does not decode (``bad_encoding``) is a
:class:`StateProblem` like any corrupt record.

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
import zlib
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamwatch.alerts import Alert
from streamwatch.monitor import READABLE_VERSIONS, SNAPSHOT_FORMAT, ModelMonitor

log = logging.getLogger("streamwatch.state")

CHECKPOINT_KEY = b"\x00checkpoint"
KIND_MODEL = b"model"
KIND_CHECKPOINT = b"checkpoint"
KIND_PART = b"part"
H_SRC = "sw_src"
H_KIND = "sw_kind"
H_ENC = "sw_enc"  # how the value is encoded: absent = plain JSON, "zlib"
H_PARTS = "sw_parts"  # on a split model record: how many parts, itself included
H_CRC = "sw_crc"  # on a split model record: CRC-32 (8 hex digits) of the reassembled value
ENC_ZLIB = b"zlib"
PART_SEP = b"\x00part\x00"  # part i of model m has key m + PART_SEP + str(i)

ZLIB_LEVEL = 1  # level 6 saves 10-12 % more bytes for 5-7x the CPU (docs/operations.md)
# parts stay well below the state topic's max.message.bytes (32 MiB) and the fetch sizes
PART_BYTES = 8 * 1024 * 1024
# a decoded snapshot larger than this is refused: bounds what a crafted record can make us allocate
MAX_SNAPSHOT_BYTES = 1024 * 1024 * 1024
MAX_PARTS = 4096  # a sw_parts header beyond this is not ours

Tag = dict[str, int]  # input topic -> next offset

# why a state record was not restored: the first eight mean the record is not what this build
# wrote (alert + counter); the last two are normal after a config change (a warning only)
CORRUPT_REASONS = (
    "bad_headers",  # no valid sw_src / sw_kind headers: not written by streamwatch
    "not_json",  # garbage or truncated bytes
    "foreign_format",  # JSON, but not a streamwatch model snapshot
    "unsupported_version",  # a snapshot of another format version
    "wrong_model",  # the snapshot of another model than the record's key
    "invalid_snapshot",  # the right envelope, but fields missing, unknown or of the wrong shape
    "bad_parts",  # a split record whose parts are missing, of another checkpoint, or malformed
    "bad_encoding",  # an unknown sw_enc, a value that does not decompress, or beyond the size cap
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


def _meta(hdrs: Any) -> dict[str, bytes]:
    """The encoding headers of a model record (``sw_enc``, ``sw_parts``, ``sw_crc``) that it has."""
    out: dict[str, bytes] = {}
    for k, raw in hdrs.items() if isinstance(hdrs, dict) else hdrs or ():
        if k in (H_ENC, H_PARTS, H_CRC):
            out[k] = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
    return out


def part_key(model_id: str, i: int) -> bytes:
    """The key of part ``i`` (>= 1) of model ``model_id``'s record."""
    return model_id.encode() + PART_SEP + str(i).encode()


def split_part_key(key: bytes) -> tuple[str, int] | None:
    """``(model_id, i)`` of a part record's key, or None if the key is not of that form."""
    model, sep, idx = key.rpartition(PART_SEP)
    # canonical decimals only ("01" or "+1" are not ours), within MAX_PARTS
    if not sep or not model or not idx.isdigit() or len(idx) > 6 or idx != str(int(idx)).encode():
        return None
    i = int(idx)
    return (model.decode("utf-8", "replace"), i) if 1 <= i < MAX_PARTS else None


@dataclass(frozen=True)
class StateRecord:
    """One record to produce to the state topic; ``value`` None is a tombstone."""

    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]


def encode_model_record(
    model_id: str,
    snapshot: bytes,
    tag: Mapping[str, int],
    stored_parts: int = 1,
    part_bytes: int = PART_BYTES,
    compress_above: int | None = None,
) -> list[StateRecord]:
    """The records that checkpoint one model's snapshot, all tagged ``tag``.

    Parameters
    ----------
    model_id, snapshot
        The model and its :meth:`~streamwatch.monitor.ModelMonitor.snapshot`.
    tag
        The ``sw_src`` tag of the checkpoint.
    stored_parts
        How many parts (the model record included) the model may have on the topic already:
        the part keys from ``n`` up to it are tombstoned, ``n`` being the parts needed now.
    part_bytes, compress_above
        The largest value of one record, and the snapshot size above which it is compressed
        (default ``part_bytes``).

    Notes
    -----
    A snapshot that fits one record stays plain JSON: the producer's ``compression.type=lz4``
    compresses it in librdkafka's own thread, which costs the worker nothing, while zlib here
    holds up the batch loop (24 ms for a 2.5 MB snapshot: about 10 % of a busy worker's time
    with ten models checkpointed every 2 s). zlib is worth it when it saves parts: a full label
    store (20-30 MB of JSON) shrinks about 3x in ~0.3 s.

    Returns
    -------
    list of StateRecord
        The model record first (it alone carries ``sw_enc``, ``sw_parts`` and ``sw_crc``),
        then parts ``1 .. n-1``, then tombstones; all to be produced in one checkpoint.
    """
    value = snapshot
    meta: list[tuple[str, bytes]] = []
    if len(snapshot) > (part_bytes if compress_above is None else compress_above):
        packed = zlib.compress(snapshot, ZLIB_LEVEL)
        if len(packed) < len(snapshot):
            value = packed
            meta.append((H_ENC, ENC_ZLIB))
    n = max(1, -(-len(value) // part_bytes))
    if n > 1:
        meta += [(H_PARTS, str(n).encode()), (H_CRC, f"{zlib.crc32(value):08x}".encode())]
    out = [StateRecord(model_id.encode(), value[:part_bytes], headers(tag, KIND_MODEL) + meta)]
    part = headers(tag, KIND_PART)
    out += [
        StateRecord(part_key(model_id, i), value[i * part_bytes : (i + 1) * part_bytes], part)
        for i in range(1, n)
    ]
    out += [StateRecord(part_key(model_id, i), None, part) for i in range(n, stored_parts)]
    return out


def inflate(data: bytes, limit: int) -> bytes:
    """zlib-decompress ``data`` to at most ``limit`` bytes, or raise ``StateRecordError``.

    The output is capped while decompressing (``max_length``), so a small crafted record that
    would expand to gigabytes (a decompression bomb) costs at most ``limit`` bytes.
    """
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise StateRecordError("bad_encoding", f"not zlib data ({e})") from None
    if len(out) > limit:
        raise StateRecordError("bad_encoding", f"decompresses to more than {limit} bytes")
    if not d.eof:
        raise StateRecordError("bad_encoding", "truncated zlib data")
    if d.unused_data:
        raise StateRecordError("bad_encoding", "bytes after the end of the zlib data")
    return out


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
    # records without valid headers, and split or encoded records that cannot be reassembled
    problems: list[StateProblem] = field(default_factory=list)
    stored_bytes: int = 0  # bytes of the kept records as stored (compressed, all parts)
    # model_id -> parts its key space may hold on the topic (highest live part index + 1, at
    # least 1) whatever their tag: the next checkpoint tombstones those it no longer needs
    stored_parts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Kept:
    rank: int
    tag: Tag
    value: bytes | None  # None: a part's tombstone
    offset: int
    timestamp: int
    meta: dict[str, bytes]


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

    The kept records are decoded: a split record is reassembled from the parts of its own
    checkpoint (same tag, CRC) and a compressed one decompressed (at most
    :data:`MAX_SNAPSHOT_BYTES`); one that cannot be is left out and reported in ``problems``
    (``bad_parts``, ``bad_encoding``), so ``records`` holds JSON snapshots only.
    """
    out = {p: RestoredPartition(p, dict(c)) for p, c in committed.items()}
    if not out:
        return out
    best: dict[tuple[int, str], _Kept] = {}  # the newest valid model record per key
    parts: dict[tuple[int, str, int], _Kept] = {}  # the newest valid part (or its tombstone)
    live: dict[tuple[int, str, int], bool] = {}  # part key -> its last record (any tag) has a value
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
                hdrs = m.headers()
                tag, kind = parse_headers(hdrs)
                if tag is None or kind not in (KIND_MODEL, KIND_CHECKPOINT, KIND_PART):
                    rp.skipped += 1
                    if value is not None:  # a tombstone without headers is someone's clean-up
                        why = "no valid sw_src/sw_kind headers (not a streamwatch record)"
                        rp.problems.append(_problem(topic, m, "bad_headers", why))
                    continue
                where = split_part_key(m.key() or b"") if kind == KIND_PART else None
                if kind == KIND_PART:
                    if where is None:
                        rp.skipped += 1
                        if value is not None:
                            why = "a part record whose key is not <model>\\x00part\\x00<i>"
                            rp.problems.append(_problem(topic, m, "bad_parts", why))
                        continue
                    # aborted or uncommitted parts are on the topic too: tombstone them later
                    live[(p, *where)] = value is not None
                if not tag_ok(tag, rp.committed):
                    rp.skipped += 1
                    continue
                if kind == KIND_CHECKPOINT:
                    if tag == rp.committed:
                        rp.checkpoint_seen = True
                    continue
                r = _rank(tag)
                if where is not None:
                    pk = (p, *where)
                    kept = parts.get(pk)
                    if kept is None or r >= kept.rank:
                        parts[pk] = _Kept(r, tag, value, m.offset() or 0, _timestamp(m), {})
                    continue
                key = (m.key() or b"").decode("utf-8", "replace")
                if value is None:  # a tombstone: the model's state was deleted
                    best.pop((p, key), None)
                    continue
                kept = best.get((p, key))
                if kept is None or r >= kept.rank:
                    best[(p, key)] = _Kept(r, tag, value, m.offset() or 0, _timestamp(m), _meta(hdrs))
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
    for (p, key), head in best.items():
        rp = out[p]
        try:
            data, stored = _assemble(key, head, parts, p)
        except StateRecordError as e:
            size = len(head.value or b"")
            rp.problems.append(
                StateProblem(topic, p, head.offset, head.timestamp, key[:256], e.reason, e.detail, size)
            )
            continue
        rp.records[key] = data
        rp.positions[key] = (head.offset, head.timestamp)
        rp.bytes += len(data)
        rp.stored_bytes += stored
    for (p, model, i), alive in live.items():
        if alive:
            sp = out[p].stored_parts
            sp[model] = max(sp.get(model, 1), i + 1)
    return out


def _assemble(
    key: str, head: _Kept, parts: Mapping[tuple[int, str, int], _Kept], p: int
) -> tuple[bytes, int]:
    """The snapshot of a kept model record and the bytes it was stored in, or StateRecordError."""
    value = head.value or b""
    raw = head.meta.get(H_PARTS)
    if raw is not None:
        n = int(raw) if raw.isdigit() and len(raw) <= 6 else 0
        if not 1 <= n <= MAX_PARTS:
            raise StateRecordError("bad_parts", f"sw_parts {raw[:20]!r} is not a number of parts")
        chunks = [value]
        for i in range(1, n):
            part = parts.get((p, key, i))
            if part is None or part.value is None:
                raise StateRecordError("bad_parts", f"part {i} of {n} is missing")
            if part.tag != head.tag:
                # a part of another checkpoint: never mix two snapshots
                raise StateRecordError(
                    "bad_parts", f"part {i} of {n} has sw_src {part.tag}, the model record {head.tag}"
                )
            chunks.append(part.value)
        value = b"".join(chunks)
        if head.meta.get(H_CRC) != f"{zlib.crc32(value):08x}".encode():
            raise StateRecordError("bad_parts", f"the {n} parts do not match the record's sw_crc")
    enc = head.meta.get(H_ENC)
    if enc is None:
        return value, len(value)
    if enc != ENC_ZLIB:
        raise StateRecordError("bad_encoding", f"unknown sw_enc {enc[:40]!r}")
    return inflate(value, MAX_SNAPSHOT_BYTES), len(value)


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

    BOUNDS: ClassVar[tuple[float, ...]] = (
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
    )

    count: int = 0
    total: float = 0.0
    last: float = 0.0
    max: float = 0.0
    buckets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.buckets:  # per class: a subclass may have other bounds
            self.buckets = [0] * (len(self.BOUNDS) + 1)

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
class Sizes(Timing):
    """Like :class:`Timing`, for sizes in bytes (snapshots per model record)."""

    BOUNDS: ClassVar[tuple[float, ...]] = (
        16_000,
        64_000,
        256_000,
        1_000_000,
        4_000_000,
        16_000_000,
        64_000_000,
        256_000_000,
        1_000_000_000,
    )


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
    state_bytes: int = 0  # their snapshots' bytes (JSON, before compression)
    state_stored_bytes: int = 0  # the bytes they took on the topic (compressed, parts included)
    state_parts: int = 0  # part records written for snapshots split into parts (sw_parts > 1)
    snapshot_bytes: Sizes = field(default_factory=Sizes)  # snapshot size per model record written
    aborts: int = 0  # transactions aborted (then state rewound to the last commit)
    commit_failures: int = 0  # at-least-once commits that failed (retried at the next checkpoint)
    offset_resets: int = 0  # committed offsets older than the retention: data was lost
    rebalances: int = 0
    state_corrupt: dict[str, int] = field(default_factory=dict)  # reason -> state records skipped
    assigned: list[tuple[str, int]] = field(default_factory=list)  # input partitions held
    owned: list[int] = field(default_factory=list)  # partitions whose state this worker owns
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # messages behind the high watermark
    committed_counts: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)
    # (transactional call, time.monotonic() it started) while one runs: a scrape shows how long
    # it has waited (an outage, or a call librdkafka never returns)
    txn_call: tuple[str, float] | None = None
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
                "state_stored_bytes": self.state_stored_bytes,
                "state_parts": self.state_parts,
                "snapshot_bytes": self.snapshot_bytes.as_dict(),
                "aborts": self.aborts,
                "commit_failures": self.commit_failures,
                "offset_resets": self.offset_resets,
                "rebalances": self.rebalances,
                "state_corrupt": dict(self.state_corrupt),
                "assigned": list(self.assigned),
                "owned": list(self.owned),
                "lag": dict(self.lag),
                "committed_counts": dict(self.committed_counts),
                "txn_call": None
                if self.txn_call is None
                else (self.txn_call[0], time.monotonic() - self.txn_call[1]),
            }


__all__ = [
    "CHECKPOINT_KEY",
    "CONFIG_REASONS",
    "CORRUPT_REASONS",
    "MAX_SNAPSHOT_BYTES",
    "PART_BYTES",
    "RestoreError",
    "RestoredMonitors",
    "RestoredPartition",
    "RuntimeStats",
    "Sizes",
    "StateProblem",
    "StateRecord",
    "StateRecordError",
    "Timing",
    "decode_snapshot",
    "encode_model_record",
    "headers",
    "inflate",
    "parse_headers",
    "part_key",
    "read_state",
    "restore_monitors",
    "split_part_key",
    "tag_ok",
]
