"""Throughput benchmark (issue 7): streamwatch against the consume+decode ceiling and a river baseline.

    .venv/bin/python bench/throughput.py [--events 200000] [--runs 3] [--quick]
                                         [--profile /tmp/c.collapsed] [--memory-events 1000000]

Needs the local broker (127.0.0.1:9092; started with ``deploy/local/kafka.sh up`` when it is
not running). Every run uses fresh topics with **one partition**, so one consumer process
measures one core.

1. Fill: ``--events`` prediction events over ``--models`` models (20 numeric + 2 categorical
   features, three class scores, epoch-ms timestamps 1 ms apart in event time) into
   ``bench<tag>.predictions``, and label events for ``--label-share`` of them (event time 1-60 s
   after their prediction) into ``bench<tag>.labels``. "Events" below are all input messages,
   predictions plus labels.
2. Measure, each in its own subprocess (peak RSS = that process's ``VmHWM``; ``ru_maxrss`` is
   reported too but on Linux it carries the parent's RSS over the exec; CPU time =
   ``time.process_time()`` of that process, librdkafka's threads included), each run in turn:

   a. ``ceiling``: one consumer assigned both topics, ``consume(num_messages=5000)`` in a loop,
      ``orjson.loads`` of each value, nothing else;
   b. ``river``: the same loop, per event: orjson, ``river.drift.ADWIN`` + ``PageHinkley`` per
      numeric feature per model, a dict of open predictions joined by event id, and
      ``river.metrics.Accuracy`` per model for labels;
   c. ``streamwatch``: the same loop feeding ``Engine.process_predictions`` / ``process_labels``
      (default settings: every detector, quality check and the label join), with the alert
      events built and serialised as ``KafkaWorker._process`` does; no producer, no transaction;
   c_worker: the real ``streamwatch run`` process (exactly-once, checkpoints every 2 s) on the
      same topics, timed from its start until ``/metrics`` counts every message consumed.

   Rates are timed from the return of the first non-empty batch to the last message, so
   connecting and the first fetch are excluded (c_worker's "from start" figure includes them).
3. Latency: a fresh stream is produced in real time at half of c's median rate (wall) to a
   running ``streamwatch run``; model i's feature ``x0`` moves by ``--shift`` standard deviations
   at a staggered moment. For each model:

   * ``detect_ms`` = the alert's ``observed_at`` (worker wall clock when the alert event was
     built, right after the batch that fired) minus the wall clock at which the first moved
     event of that model was handed to the producer (``produce()``);
   * ``visible_ms`` = the wall clock at which a ``read_committed`` consumer of the alerts topic
     received it, minus the same start: it adds the wait for the checkpoint transaction;
   * ``events_after_change`` = the alert's ``events_seen`` minus the model's events before the
     change.

   p50/p99 are over all models of all latency runs (few samples: p99 is close to the max).

Writes bench/results/throughput.json. Targets (issue 7): c >= 150k events/s per core,
c/a >= 0.5, c/b >= 5.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "throughput.json"
PY = sys.executable
N_NUMERIC, N_CATEGORICAL = 20, 2
CLASSES = ["approve", "review", "reject"]
START_MS = 1_798_761_600_000
BATCH = 20_000  # the worker's default batch.max_events (not imported: a and b stay streamwatch-free)
CONSUMER_BASE = {
    # what KafkaWorker sets, minus the group protocol (we assign)
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "queued.max.messages.kbytes": 32768,
}


# -- events ------------------------------------------------------------------------------------


def feature_config() -> dict[str, str]:
    f = {f"x{j}": "numeric" for j in range(N_NUMERIC)}
    f.update({f"c{j}": "categorical" for j in range(N_CATEGORICAL)})
    return f


def model_ids(m: int) -> list[str]:
    return [f"m{i}" for i in range(m)]


class Generator:
    """Columns of synthetic events; ``body(i)`` is event i without its timestamp."""

    def __init__(self, n: int, models: int, seed: int, label_share: float, tag: str) -> None:
        rng = np.random.default_rng(seed)
        self.n, self.models, self.tag = n, models, tag
        mu = np.arange(N_NUMERIC, dtype=float) % 7 * 3.0
        sd = 1.0 + np.arange(N_NUMERIC) % 4
        self.mu, self.sd = mu, sd
        self.x = np.round(rng.standard_normal((n, N_NUMERIC)) * sd + mu, 4)
        self.c0 = rng.integers(0, 6, n)
        self.c1 = np.minimum(rng.geometric(0.12, n), 40)  # a long tail: more than max_categories
        logits = self.x[:, :3] / sd[:3] + rng.normal(0, 0.5, (n, 3))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.p = np.round(e / e.sum(axis=1, keepdims=True), 4)
        self.yhat = self.p.argmax(axis=1)
        self.labelled = rng.random(n) < label_share
        self.truth = np.where(rng.random(n) < 0.85, self.yhat, rng.integers(0, 3, n))
        self.delay_ms = rng.integers(1_000, 60_000, n)

    def model(self, i: int) -> str:
        return f"m{i % self.models}"

    def body(self, i: int, shift: float = 0.0) -> bytes:
        feats: dict[str, Any] = {f"x{j}": v for j, v in enumerate(self.x[i].tolist())}
        if shift:
            feats["x0"] = round(feats["x0"] + shift * float(self.sd[0]), 4)
        feats["c0"] = f"k{int(self.c0[i])}"
        feats["c1"] = f"v{int(self.c1[i])}"
        p = self.p[i].tolist()
        return orjson.dumps(
            {
                "event_id": f"{self.tag}-{i}",
                "model_id": self.model(i),
                "model_version": "1",
                "features": feats,
                "prediction": {
                    "label": CLASSES[int(self.yhat[i])],
                    "scores": dict(zip(CLASSES, p, strict=True)),
                },
            }
        )

    def prediction(self, i: int, ts_ms: int, shift: float = 0.0) -> bytes:
        return b'{"timestamp":' + str(ts_ms).encode() + b"," + self.body(i, shift)[1:]

    def label(self, i: int, ts_ms: int) -> bytes:
        return orjson.dumps(
            {
                "event_id": f"{self.tag}-{i}",
                "model_id": self.model(i),
                "timestamp": ts_ms + int(self.delay_ms[i]),
                "label": CLASSES[int(self.truth[i])],
            }
        )


# -- broker helpers ----------------------------------------------------------------------------


def ensure_broker(bootstrap: str) -> None:
    host, port = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return
    except OSError:
        pass
    print("broker not running: deploy/local/kafka.sh up", flush=True)
    subprocess.run([str(ROOT / "deploy/local/kafka.sh"), "up"], check=True)


def create_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(n, 1, 1) for n in names], operation_timeout=15).values():
        fut.result(20)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(n in md.topics and md.topics[n].error is None for n in names):
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics {names} did not appear")


def delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if not names:
        return
    try:
        for fut in admin.delete_topics(names, operation_timeout=15).values():
            fut.result(20)
    except Exception as e:
        print(f"(could not delete topics: {e})", flush=True)


def producer(bootstrap: str, **extra: Any) -> Any:
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000, "acks": 1}
    conf.update(extra)
    return Producer(conf)


def produce(p: Any, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            p.produce(topic, value, key)
            return
        except BufferError:
            p.poll(0.05)


def run_topics(bootstrap: str, tag: str) -> list[str]:
    """Every topic of run ``tag``: inputs, and the worker's alerts, dead letters and state."""
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return sorted(t for t in topics if t.startswith(f"bench{tag}."))


def fill(bootstrap: str, gen: Generator, t_pred: str, t_lab: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = producer(bootstrap)
    nbytes, nlab = 0, 0
    for i in range(gen.n):
        ts = START_MS + i
        v = gen.prediction(i, ts)
        nbytes += len(v)
        key = gen.model(i).encode()
        produce(p, t_pred, v, key)
        if gen.labelled[i]:
            produce(p, t_lab, gen.label(i, ts), key)
            nlab += 1
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    assert left == 0, f"{left} messages not delivered"
    return {
        "predictions": gen.n,
        "labels": nlab,
        "messages": gen.n + nlab,
        "mean_prediction_bytes": round(nbytes / gen.n, 1),
        "fill_seconds": round(time.perf_counter() - t0, 2),
    }


def settings_doc(
    bootstrap: str, models: int, t_pred: str, t_lab: str, tag: str, group: str, instance: str
) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "topics": {
            "predictions": t_pred,
            "labels": t_lab,
            "alerts": f"bench{tag}.alerts",
            "dead_letters": f"bench{tag}.dlq",
            "state": f"bench{tag}.state.{group}",
            "partitions": 1,
        },
        "state": {"instance_id": instance},
        "logging": {"level": "warning"},
        "models": {m: {"features": feature_config()} for m in model_ids(models)},
    }


# -- measurements (each in its own process) ------------------------------------------------------


def _hwm_mb() -> float:
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec and so would include the parent's
    # RSS at the (v)fork that started this process
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(args: argparse.Namespace) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    mode, expect = args.measure, args.expect
    cfg = json.loads(Path(args.config).read_text())
    t_pred, t_lab = cfg["topics"]["predictions"], cfg["topics"]["labels"]
    consumer = Consumer(
        {
            **CONSUMER_BASE,
            "bootstrap.servers": cfg["kafka"]["bootstrap_servers"],
            "group.id": uuid.uuid4().hex,
        }
    )
    consumer.assign([TopicPartition(t_pred, 0, OFFSET_BEGINNING), TopicPartition(t_lab, 0, OFFSET_BEGINNING)])
    extra: dict[str, Any] = {}
    rss_series: list[tuple[int, float]] = []

    if mode == "ceiling":

        def handle(msgs: list[Any]) -> None:
            loads = orjson.loads
            for m in msgs:
                if m.error() is None:
                    loads(m.value())

    elif mode == "river":
        from river import drift, metrics

        numeric = [f"x{j}" for j in range(N_NUMERIC)]
        dets: dict[str, list[tuple[str, Any, Any]]] = {}
        accs: dict[str, Any] = {}
        open_preds: dict[str, str] = {}
        alarms = Counter[str]()

        def handle(msgs: list[Any]) -> None:
            loads = orjson.loads
            for m in msgs:
                if m.error() is not None:
                    continue
                d = loads(m.value())
                model = d["model_id"]
                if m.topic() == t_pred:
                    ds = dets.get(model)
                    if ds is None:
                        ds = dets[model] = [(f, drift.ADWIN(), drift.PageHinkley()) for f in numeric]
                    feats = d["features"]
                    for f, ad, ph in ds:
                        x = feats.get(f)
                        if x is None:
                            continue
                        ad.update(x)
                        ph.update(x)
                        if ad.drift_detected:
                            alarms["adwin"] += 1
                        if ph.drift_detected:
                            alarms["page_hinkley"] += 1
                    open_preds[d["event_id"]] = d["prediction"]["label"]
                else:
                    yhat = open_preds.pop(d["event_id"], None)
                    if yhat is not None:
                        acc = accs.get(model)
                        if acc is None:
                            acc = accs[model] = metrics.Accuracy()
                        acc.update(d["label"], yhat)

        extra["river_alarms"] = alarms
        extra["accuracy"] = accs

    elif mode == "streamwatch":
        from streamwatch.config import Settings
        from streamwatch.engine import Engine
        from streamwatch.exporter import Exporter
        from streamwatch.runtime.kafka import _raw

        settings = Settings(**cfg)
        engine = Engine(settings)
        exporter = Exporter(engine)
        alerts = Counter[str]()
        inputs = {t_pred: "predictions", t_lab: "labels"}
        extra["engine"] = engine
        extra["alerts"] = alerts

        def handle(msgs: list[Any]) -> None:
            # KafkaWorker._process without the producer: route, run the engine, build alert events
            by_source: dict[str, list[Any]] = {"predictions": [], "labels": []}
            for m in msgs:
                if m.error() is not None:
                    continue
                raw = _raw(m)
                by_source[inputs[raw.topic]].append(raw)
            with exporter.batch_seconds.time():
                results = [
                    engine.process_predictions(by_source["predictions"]),
                    engine.process_labels(by_source["labels"]),
                ]
            now_ms = int(time.time() * 1000)
            for r in results:
                for a in r.alerts:
                    orjson.dumps(a.to_event(now_ms))
                    alerts[f"{a.kind}/{a.status}"] += 1
                for d in r.dead_letters:
                    d.body()

    else:
        raise SystemExit(f"unknown mode {mode}")

    got = 0
    while got == 0:  # connect and first fetch: not timed
        msgs = consumer.consume(BATCH, 1.0)
        msgs = [m for m in msgs if m.error() is None]
        got = len(msgs)
        if got:
            handle(msgs)
    w0, c0 = time.perf_counter(), time.process_time()
    timed = 0
    next_rss = 0
    marks: list[tuple[int, float, float]] = []
    while got < expect:
        # never ask for more than is left: consume() waits its timeout for a short batch
        msgs = consumer.consume(min(BATCH, expect - got), 1.0)
        if not msgs:
            if time.perf_counter() - w0 > 600:
                raise SystemExit(f"stalled at {got} of {expect}")
            continue
        handle(msgs)
        k = sum(1 for m in msgs if m.error() is None)
        got += k
        timed += k
        if got >= next_rss:
            rss_series.append((got, round(_rss_now_mb(), 1)))
            marks.append((timed, time.perf_counter() - w0, time.process_time() - c0))
            next_rss += max(expect // 20, BATCH)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rss_series.append((got, round(_rss_now_mb(), 1)))
    # the second half alone: past every model's warm-up (reference, first windows, null quantiles)
    half = next((mk for mk in marks if mk[0] >= timed // 2), (0, 0.0, 0.0))
    out: dict[str, Any] = {
        "mode": mode,
        "messages": got,
        "timed_messages": timed,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "events_per_s_wall": round(timed / wall),
        "events_per_s_cpu": round(timed / cpu),
        "second_half_events_per_s_wall": round((timed - half[0]) / max(wall - half[1], 1e-9)),
        "second_half_events_per_s_cpu": round((timed - half[0]) / max(cpu - half[2], 1e-9)),
        "peak_rss_mb": round(_hwm_mb(), 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mb_by_events": rss_series,
    }
    if mode == "river":
        out["alarms"] = dict(extra["river_alarms"])
        out["accuracy"] = {k: round(v.get(), 4) for k, v in sorted(extra["accuracy"].items())}
    if mode == "streamwatch":
        e = extra["engine"]
        out["alerts"] = dict(extra["alerts"])
        out["dead_letters"] = dict(e.dead_letters)
        out["consumed"] = dict(e.consumed_messages)
        assert not e.dead_letters, f"dead letters: {dict(e.dead_letters)}"
    consumer.close()
    print("RESULT " + json.dumps(out), flush=True)


def run_measure(mode: str, cfg_path: Path, expect: int, wrap: list[str] | None = None) -> dict[str, Any]:
    cmd = [
        *(wrap or []),
        PY,
        str(Path(__file__).resolve()),
        "--measure",
        mode,
        "--config",
        str(cfg_path),
        "--expect",
        str(expect),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


# -- the real worker ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def consumed(text: str) -> int:
    n = 0
    for line in text.splitlines():
        if line.startswith("streamwatch_messages_consumed_total{"):
            n += int(float(line.rsplit(" ", 1)[1]))
    return n


def proc_stats(pid: int) -> tuple[float, float]:
    """(cpu seconds, peak RSS MB) of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def start_worker(
    cfg_path: Path, port: int, log_path: Path, wrap: list[str] | None = None
) -> subprocess.Popen[bytes]:
    exe = str(Path(PY).with_name("streamwatch"))
    with open(log_path, "ab") as logf:
        return subprocess.Popen(
            [
                *(wrap or []),
                exe,
                "--log-level",
                "warning",
                "run",
                "--config",
                str(cfg_path),
                "--metrics-port",
                str(port),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )


def stop_worker(p: subprocess.Popen[bytes], wrapped: bool = False) -> None:
    if wrapped:  # stop the worker itself; py-spy writes its file when its child exits
        subprocess.run(["pkill", "-TERM", "-P", str(p.pid)], check=False)
    else:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_worker(cfg_path: Path, expect: int, log_path: Path, wrap: list[str] | None = None) -> dict[str, Any]:
    port = free_port()
    t0 = time.perf_counter()
    p = start_worker(cfg_path, port, log_path, wrap)
    t_first = None
    n = 0
    try:
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"worker exited {p.returncode}; see {log_path}")
            text = scrape(port)
            if text is not None:
                n = consumed(text)
                now = time.perf_counter()
                if n and t_first is None:
                    t_first, n_first = now, n
                if n >= expect:
                    break
            if time.perf_counter() - t0 > 900:
                raise RuntimeError(f"worker stalled at {n} of {expect}")
            time.sleep(0.2)  # Prometheus scrapes every 15-60 s: a 20 Hz poll would cost the worker ~5 %
        t_done = time.perf_counter()
        cpu, hwm = proc_stats(p.pid)
    finally:
        stop_worker(p, wrapped=bool(wrap))
    assert t_first is not None
    from_first = t_done - t_first
    return {
        "mode": "worker",
        "messages": n,
        "seconds_from_start": round(t_done - t0, 3),
        "seconds_from_first_consumed": round(from_first, 3),
        "events_per_s_from_start": round(n / (t_done - t0)),
        "events_per_s_wall": round((n - n_first) / from_first) if from_first > 0 else None,
        "cpu_seconds_total": round(cpu, 2),
        "events_per_s_cpu": round(n / cpu),
        "peak_rss_mb": round(hwm, 1),
    }


# -- latency -----------------------------------------------------------------------------------


def _parse_ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def latency_run(args: argparse.Namespace, rate: float, r: int, tmp: Path) -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    tag = f"{uuid.uuid4().hex[:8]}lat{r}"
    t_pred, t_lab = f"bench{tag}.predictions", f"bench{tag}.labels"
    doc = settings_doc(args.bootstrap, args.models, t_pred, t_lab, tag, f"g{tag}", f"i{tag}")
    create_topics(args.bootstrap, [t_pred, t_lab, doc["topics"]["alerts"], doc["topics"]["dead_letters"]])
    cfg_path = tmp / f"lat{r}.json"
    cfg_path.write_text(json.dumps(doc))
    m = args.models
    # warm-up, not timed: each model gets --latency-warm-events events (reference, a full window,
    # the null quantiles computed) as fast as they go, and the worker consumes them all. Then the
    # real-time phase at `rate`: model i moves gap_s * (i + 1) seconds into it; the tail leaves the
    # last one >= 1500 of its events to be found
    warm = args.latency_warm_events * m
    gap_s, tail_s = args.latency_gap_seconds, max(2.0, 1500 * m / rate)
    total = warm + int((gap_s * m + tail_s) * rate)
    gen = Generator(total, m, 100 + r, 0.0, tag)
    per_model_change = [(warm + int(gap_s * (i + 1) * rate)) // m for i in range(m)]  # model i's index

    # alerts, read_committed, as they become visible
    seen: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()
    ac = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"a{tag}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    ac.assign([TopicPartition(doc["topics"]["alerts"], 0, OFFSET_BEGINNING)])

    def read_alerts() -> None:
        while not stop.is_set():
            for msg in ac.consume(100, 0.05):
                if msg.error() is None:
                    seen.append((time.time(), orjson.loads(msg.value())))

    th = threading.Thread(target=read_alerts, daemon=True)
    th.start()
    port = free_port()
    w = start_worker(cfg_path, port, tmp / f"lat{r}.log")
    try:
        deadline = time.monotonic() + 60
        while True:  # ready = assigned and restored
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or w.poll() is not None:
                raise RuntimeError("worker not ready")
            time.sleep(0.1)
        pr = producer(args.bootstrap, **{"linger.ms": 5})
        for k in range(warm):
            produce(pr, t_pred, gen.prediction(k, int(time.time() * 1000)), f"m{k % m}".encode())
        pr.flush(60)
        deadline = time.monotonic() + 600
        while consumed(scrape(port) or "") < warm:
            if time.monotonic() > deadline or w.poll() is not None:
                raise RuntimeError("worker did not consume the warm-up")
            time.sleep(0.1)
        change_wall: dict[str, float] = {}
        t0 = time.time()
        k = warm
        while k < total:
            due = min(total, warm + int((time.time() - t0) * rate) + 1)
            while k < due:
                model_i, idx = k % m, k // m
                shift = args.shift if idx >= per_model_change[model_i] else 0.0
                now = time.time()
                if shift and f"m{model_i}" not in change_wall:
                    change_wall[f"m{model_i}"] = now
                produce(pr, t_pred, gen.prediction(k, int(now * 1000), shift), f"m{model_i}".encode())
                k += 1
            pr.poll(0)
            time.sleep(0.0005)
        produce_s = time.time() - t0
        behind = warm + int(produce_s * rate) - consumed(scrape(port) or "")
        pr.flush(30)
        time.sleep(args.checkpoint_wait)
        m_text = scrape(port) or ""
    finally:
        stop_worker(w)
        stop.set()
        th.join(5)
        ac.close()
    delete_topics(args.bootstrap, run_topics(args.bootstrap, tag))
    samples = []
    false_before = 0
    for model, t_change in sorted(change_wall.items()):
        first = None
        for t_seen, ev in seen:
            if ev["model_id"] != model or ev["status"] != "firing" or ev["kind"] != "data_drift":
                continue
            if _parse_ts(ev["observed_at"]) + 0.001 < t_change:
                false_before += 1
                continue
            if ev["feature"] != "x0":
                continue
            if first is None or _parse_ts(ev["observed_at"]) < _parse_ts(first[1]["observed_at"]):
                first = (t_seen, ev)
        mi = int(model[1:])
        samples.append(
            {
                "model": model,
                "detected": first is not None,
                "detect_ms": None
                if first is None
                else round((_parse_ts(first[1]["observed_at"]) - t_change) * 1000, 1),
                "visible_ms": None if first is None else round((first[0] - t_change) * 1000, 1),
                "events_after_change": None
                if first is None
                else first[1]["events_seen"] - per_model_change[mi],
                "detector": None if first is None else first[1]["detector"],
            }
        )
    return {
        "rate_target": round(rate),
        "rate_achieved": round((total - warm) / produce_s),
        "worker_behind_at_end_of_production": behind,
        "events": total,
        "consumed_at_end": consumed(m_text),
        "false_drift_alerts_before_change": false_before,
        "samples": samples,
    }


# -- profile -----------------------------------------------------------------------------------


def summarise_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares by function from py-spy's collapsed ('raw') output."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        c = int(n)
        total += c
        frames = [_fn(f) for f in stack.split(";")]
        self_t[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    return {
        "samples": total,
        "self": [(f, round(100 * c / total, 1)) for f, c in self_t.most_common(top)],
        "inclusive": [(f, round(100 * c / total, 1)) for f, c in incl.most_common(top * 2)],
    }


def _fn(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")").rsplit(":", 1)[0]
    parts = loc.split("/")
    short = "/".join(parts[-2:]) if "streamwatch" in parts else parts[-1]
    return f"{name} ({short})"


# -- main --------------------------------------------------------------------------------------


def spread(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def pct(xs: list[float], q: float) -> float | None:
    return None if not xs else round(float(np.percentile(xs, q)), 1)


def main() -> None:
    ap = argparse.ArgumentParser(
        description="throughput of streamwatch vs consume+decode and per-event river"
    )
    ap.add_argument("--events", type=int, default=200_000, help="prediction events in the topic")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20k events, 1 run, short latency phase")
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--label-share", type=float, default=0.3)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--shift", type=float, default=1.0, help="latency drift, in standard deviations of x0")
    ap.add_argument("--latency-runs", type=int, default=None, help="default: --runs")
    ap.add_argument("--latency-warm-events", type=int, default=3000, help="per model, before its change")
    ap.add_argument("--latency-gap-seconds", type=float, default=0.7)
    ap.add_argument("--checkpoint-wait", type=float, default=4.0)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: worker,latency")
    ap.add_argument("--profile", type=Path, help="also run c under py-spy, collapsed stacks to this file")
    ap.add_argument(
        "--profile-worker", type=Path, help="also run the worker under py-spy, collapsed stacks to this file"
    )
    ap.add_argument("--memory-events", type=int, default=0, help="also run c once over this many events")
    ap.add_argument("--out", type=Path, default=OUT)
    # internal: one measurement
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args)
        return
    if args.quick:
        args.events, args.runs = min(args.events, 20_000), 1
        args.latency_gap_seconds = 0.5
    skip = set(filter(None, args.skip.split(",")))
    lat_runs = args.runs if args.latency_runs is None else args.latency_runs

    ensure_broker(args.bootstrap)
    tmp = Path(tempfile.mkdtemp(prefix="sw-throughput-"))
    # measure one version of the code: a copy taken now, first on the path of every subprocess
    # (other work may edit the checkout during the minutes this runs)
    shutil.copytree(
        ROOT / "streamwatch", tmp / "src" / "streamwatch", ignore=shutil.ignore_patterns("__pycache__")
    )
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "src"), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(tmp / "src"))
    tag = uuid.uuid4().hex[:8]
    t_pred, t_lab = f"bench{tag}.predictions", f"bench{tag}.labels"
    doc = settings_doc(args.bootstrap, args.models, t_pred, t_lab, tag, f"g{tag}", f"i{tag}")
    create_topics(args.bootstrap, [t_pred, t_lab, doc["topics"]["alerts"], doc["topics"]["dead_letters"]])
    gen = Generator(args.events, args.models, 1, args.label_share, tag)
    filled = fill(args.bootstrap, gen, t_pred, t_lab)
    expect = filled["messages"]
    print(f"filled {t_pred} / {t_lab}: {json.dumps(filled)}", flush=True)
    cfg_path = tmp / "bench.json"
    cfg_path.write_text(json.dumps(doc))

    # calibration thresholds are cached per configuration: compute them once, outside the timings
    from streamwatch.config import Settings
    from streamwatch.decode import RawMessage
    from streamwatch.engine import Engine

    t0 = time.perf_counter()
    warm = Engine(Settings(**doc))
    warm.process_predictions(
        [RawMessage(gen.prediction(i, START_MS + i)) for i in range(min(gen.n, 1500 * args.models))]
    )
    print(f"calibration cache primed in {time.perf_counter() - t0:.1f} s", flush=True)
    del warm

    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in range(args.runs):
        for mode in ("ceiling", "river", "streamwatch"):
            res = run_measure(mode, cfg_path, expect)
            runs[mode].append(res)
            print(
                f"run {r + 1} {mode:12} {res['events_per_s_wall']:>9,} ev/s wall  "
                f"{res['events_per_s_cpu']:>9,} ev/s cpu  rss {res['peak_rss_mb']} MB",
                flush=True,
            )
        if "worker" not in skip:
            wdoc = settings_doc(args.bootstrap, args.models, t_pred, t_lab, tag, f"w{r}{tag}", f"w{r}{tag}")
            wcfg = tmp / f"worker{r}.json"
            wcfg.write_text(json.dumps(wdoc))
            res = run_worker(wcfg, expect, tmp / f"worker{r}.log")
            runs["worker"].append(res)
            print(
                f"run {r + 1} {'worker':12} {res['events_per_s_wall']:>9,} ev/s wall (from first consumed), "
                f"{res['events_per_s_from_start']:,} from start, {res['events_per_s_cpu']:,} ev/s cpu, "
                f"rss {res['peak_rss_mb']} MB",
                flush=True,
            )

    def rates(mode: str, key: str) -> list[float]:
        return [float(x[key]) for x in runs[mode] if x.get(key) is not None]

    summary: dict[str, Any] = {}
    for mode, name in (("ceiling", "a"), ("river", "b"), ("streamwatch", "c"), ("worker", "c_worker")):
        if runs.get(mode):
            summary[name] = {
                "events_per_s_wall": spread(rates(mode, "events_per_s_wall")),
                "events_per_s_cpu": spread(rates(mode, "events_per_s_cpu")),
                "peak_rss_mb": spread(rates(mode, "peak_rss_mb")),
            }
            if mode == "worker":
                summary[name]["events_per_s_from_start"] = spread(rates(mode, "events_per_s_from_start"))
    ratios: dict[str, Any] = {}
    for key in ("events_per_s_wall", "events_per_s_cpu"):
        a, b, c = (rates(m, key) for m in ("ceiling", "river", "streamwatch"))
        # per run (same conditions), then min/median/max over runs
        ratios[key] = {
            "c/a": spread([round(ci / ai, 3) for ai, ci in zip(a, c, strict=True)]),
            "c/b": spread([round(ci / bi, 2) for bi, ci in zip(b, c, strict=True)]),
        }
    c_med = summary["c"]["events_per_s_wall"]["median"]
    summary["c"]["second_half_events_per_s_wall"] = spread(
        rates("streamwatch", "second_half_events_per_s_wall")
    )
    summary["c"]["second_half_events_per_s_cpu"] = spread(
        rates("streamwatch", "second_half_events_per_s_cpu")
    )
    # capacity for the latency phase: c's steady state (second half), not its warm-up-inflated mean
    c_capacity = summary["c"]["second_half_events_per_s_wall"]["median"]

    memory = None
    if args.memory_events:
        mtag = uuid.uuid4().hex[:8]
        mp, ml = f"bench{mtag}.predictions", f"bench{mtag}.labels"
        mdoc = settings_doc(args.bootstrap, args.models, mp, ml, mtag, f"g{mtag}", f"i{mtag}")
        create_topics(args.bootstrap, [mp, ml])
        mfill = fill(
            args.bootstrap, Generator(args.memory_events, args.models, 2, args.label_share, mtag), mp, ml
        )
        mcfg = tmp / "memory.json"
        mcfg.write_text(json.dumps(mdoc))
        res = run_measure("streamwatch", mcfg, mfill["messages"])
        memory = {
            "messages": mfill["messages"],
            "events_per_s_wall": res["events_per_s_wall"],
            "peak_rss_mb": res["peak_rss_mb"],
            "rss_mb_by_events": res["rss_mb_by_events"],
        }
        print(f"memory run: {json.dumps(memory)}", flush=True)
        delete_topics(args.bootstrap, run_topics(args.bootstrap, mtag))

    profile = None
    if args.profile:
        spy = Path(PY).with_name("py-spy")
        res = run_measure(
            "streamwatch",
            cfg_path,
            expect,
            wrap=[str(spy), "record", "-r", "250", "-f", "raw", "-o", str(args.profile), "--"],
        )
        profile = {
            "file": str(args.profile),
            "events_per_s_wall_under_py_spy": res["events_per_s_wall"],
            **summarise_profile(args.profile),
        }
        print(
            "profile (self %):", *(f"  {p:5.1f}  {f}" for f, p in profile["self"][:20]), sep="\n", flush=True
        )

    worker_profile = None
    if args.profile_worker:
        spy = Path(PY).with_name("py-spy")
        wdoc = settings_doc(args.bootstrap, args.models, t_pred, t_lab, tag, f"wp{tag}", f"wp{tag}")
        wcfg = tmp / "worker-profile.json"
        wcfg.write_text(json.dumps(wdoc))
        wrap = [str(spy), "record", "-r", "250", "-f", "raw", "-o", str(args.profile_worker), "--"]
        res = run_worker(wcfg, expect, tmp / "worker-profile.log", wrap)
        worker_profile = {
            "file": str(args.profile_worker),
            "events_per_s_wall_under_py_spy": res["events_per_s_wall"],
            **summarise_profile(args.profile_worker),
        }
        print(
            "worker profile (self %):",
            *(f"  {p:5.1f}  {f}" for f, p in worker_profile["self"][:20]),
            sep="\n",
            flush=True,
        )

    latency = None
    if "latency" not in skip and lat_runs:
        rate = c_capacity / 2
        lat = [latency_run(args, rate, r, tmp) for r in range(lat_runs)]
        det = [s["detect_ms"] for x in lat for s in x["samples"] if s["detected"]]
        vis = [s["visible_ms"] for x in lat for s in x["samples"] if s["detected"]]
        evs = [s["events_after_change"] for x in lat for s in x["samples"] if s["detected"]]
        latency = {
            "definition": "detect_ms: alert observed_at (worker wall clock when the alert event is "
            "built) minus the wall clock when the model's first shifted event was passed to "
            "produce(); visible_ms: when a "
            "read_committed consumer of the alerts topic received it, minus the same start",
            "rate_events_per_s": round(rate),
            "rate_is": "half of c's median second-half (steady-state) wall rate",
            "warm_events_per_model": args.latency_warm_events,
            "shift_sd": args.shift,
            "models": args.models,
            "samples": len(det),
            "missed": sum(1 for x in lat for s in x["samples"] if not s["detected"]),
            "detect_ms": {"p50": pct(det, 50), "p99": pct(det, 99), "max": max(det) if det else None},
            "visible_ms": {"p50": pct(vis, 50), "p99": pct(vis, 99), "max": max(vis) if vis else None},
            "events_after_change": {"p50": pct(evs, 50), "p99": pct(evs, 99)},
            "runs": lat,
        }
        print(
            f"latency at {rate:,.0f} ev/s: detect p50 {latency['detect_ms']['p50']} ms, "
            f"p99 {latency['detect_ms']['p99']} ms; visible p50 {latency['visible_ms']['p50']} ms, "
            f"p99 {latency['visible_ms']['p99']} ms ({len(det)} samples, {latency['missed']} missed)",
            flush=True,
        )

    delete_topics(args.bootstrap, run_topics(args.bootstrap, tag))
    result = {
        "what": "events/s per core (one partition, one consumer process); "
        "events = prediction + label messages",
        "command": "bench/throughput.py " + " ".join(sys.argv[1:]),
        "targets": {"c_events_per_s": 150_000, "c/a": 0.5, "c/b": 5},
        "input": {
            **filled,
            "models": args.models,
            "numeric_features": N_NUMERIC,
            "categorical_features": N_CATEGORICAL,
            "classes": len(CLASSES),
            "label_share": args.label_share,
        },
        "runs": args.runs,
        **summary,
        "ratios": ratios,
        "c_meets_target": c_med >= 150_000,
        "latency": latency,
        "memory": memory,
        "profile": profile,
        "worker_profile": worker_profile,
        "per_run": runs,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "load_average_at_end": os.getloadavg(),
        "broker": args.bootstrap,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    for name in ("a", "b", "c", "c_worker"):
        if name in summary:
            s = summary[name]
            w, c = s["events_per_s_wall"], s["events_per_s_cpu"]
            print(
                f"{name:9} wall {w['min']:>9,.0f} / {w['median']:>9,.0f} / {w['max']:>9,.0f}   "
                f"cpu {c['min']:>9,.0f} / {c['median']:>9,.0f} / {c['max']:>9,.0f}   "
                f"rss {s['peak_rss_mb']['median']:.0f} MB   (min / median / max)"
            )
    for key, v in ratios.items():
        print(f"{key}: c/a {v['c/a']['median']:.3f} (target 0.5), c/b {v['c/b']['median']:.2f} (target 5)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
