"""Secure Kafka and state safety, end to end.

A second local broker (deploy/local/kafka.sh with KAFKA_SASL_PORT and KAFKA_SASL_SSL_PORT, its own
ports and data dir under .cache) accepts only authenticated clients on its SASL listeners; the
worker consumes, produces, checkpoints and restores through them, never writes the password,
and exits 1 at once with a clear message when the password is wrong. On the shared broker,
corrupt and foreign records written into a state topic before the worker starts are skipped with
``state_corrupt`` alerts and a counter, and the valid state next to them is restored.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.config import Settings, load_config
from streamwatch.decode import RawMessage
from streamwatch.engine import Engine
from streamwatch.runtime.kafka import client_config, ensure_topics
from streamwatch.runtime.state import headers
from streamwatch.simulate import Scenario, generate
from tests.conftest import REPO, free_port, http_get, spawn_worker, terminate, wait_until

DRIFT = {"reference_size": 200, "window_size": 200, "step": 50}
USER = "streamwatch"


# -- the secure broker -------------------------------------------------------------------------


@dataclass
class SecureBroker:
    plain: str  # bootstrap of the unauthenticated listener (the broker's own traffic)
    sasl: str  # SASL_PLAINTEXT
    sasl_ssl: str  # SASL_SSL, certificate signed by `ca`
    ca: Path
    password: str
    env: dict[str, str]

    def run(self, verb: str) -> None:
        subprocess.run([str(REPO / "deploy/local/kafka.sh"), verb], check=True, timeout=180, env=self.env)


def _pki(d: Path, keystore_password: str) -> tuple[Path, Path]:
    """A throwaway CA and the broker's PKCS12 keystore with a certificate for 127.0.0.1."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=60)

    key = ["-newkey", "rsa:2048", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=sw test CA")
    run("req", *key, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "1", "-extfile", "san.ext",
    )  # fmt: skip
    run(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-out", "broker.p12", "-name", "broker", "-passout", f"pass:{keystore_password}",
    )  # fmt: skip
    return d / "ca.pem", d / "broker.p12"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if not (REPO / ".cache/kafka/libs/.complete").exists():
        pytest.skip("the broker jars are not fetched (deploy/local/kafka.sh fetch)")
    if shutil.which("openssl") is None or shutil.which("java") is None:
        pytest.skip("openssl and java are needed")
    pki = tmp_path_factory.mktemp("pki")
    ks_password = secrets.token_hex(8)
    ca, keystore = _pki(pki, ks_password)
    password = "pw-" + secrets.token_urlsafe(12)
    home = REPO / ".cache" / f"kafka-secure-{uuid.uuid4().hex[:8]}"  # a data dir of its own
    port, sasl, sasl_ssl = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_DIR": str(home),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_SASL_PORT": str(sasl),
        "KAFKA_SASL_SSL_PORT": str(sasl_ssl),
        "KAFKA_SSL_KEYSTORE": str(keystore),
        "KAFKA_SSL_KEYSTORE_PASSWORD": ks_password,
        "KAFKA_SASL_USERS": f"{USER}:{password}",
        "KAFKA_HEAP": "384m",
    }
    b = SecureBroker(f"127.0.0.1:{port}", f"127.0.0.1:{sasl}", f"127.0.0.1:{sasl_ssl}", ca, password, env)
    try:
        b.run("up")
        yield b
    finally:
        b.run("down")
        shutil.rmtree(home, ignore_errors=True)


def _kafka(b: SecureBroker, protocol: str, mechanism: str) -> dict[str, Any]:
    """The config's kafka section, without the password (that comes by environment)."""
    doc: dict[str, Any] = {
        "bootstrap_servers": b.sasl if protocol == "SASL_PLAINTEXT" else b.sasl_ssl,
        "group_id": f"g-{uuid.uuid4().hex[:8]}",
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_username": USER,
        "client": {"session.timeout.ms": 10000, "heartbeat.interval.ms": 1000},
    }
    if protocol == "SASL_SSL":
        doc["ssl_ca_location"] = str(b.ca)
    return doc


def _config(path: Path, kafka: dict[str, Any], models: dict[str, Any], **extra: Any) -> Path:
    tag = uuid.uuid4().hex[:8]
    doc = {
        "kafka": kafka,
        "topics": {
            "predictions": f"s{tag}.predictions",
            "labels": f"s{tag}.labels",
            "alerts": f"s{tag}.alerts",
            "dead_letters": f"s{tag}.dlq",
            "state": f"s{tag}.state",
            "partitions": 2,
        },
        "batch": {"max_events": 500, "timeout_seconds": 0.1, "commit_interval_seconds": 0.5},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "drift": DRIFT,
        "models": models,
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _settings(cfg: Path, password: str | None) -> Settings:
    old = os.environ.get("STREAMWATCH_KAFKA__SASL_PASSWORD")
    if password is not None:
        os.environ["STREAMWATCH_KAFKA__SASL_PASSWORD"] = password
    try:
        return load_config(cfg)
    finally:
        if old is None:
            os.environ.pop("STREAMWATCH_KAFKA__SASL_PASSWORD", None)
        else:
            os.environ["STREAMWATCH_KAFKA__SASL_PASSWORD"] = old


def _produce(
    conf: dict[str, Any], topic: str, records: list[tuple[bytes | None, bytes | None, Any, int | None]]
) -> None:
    p = Producer({**conf, "linger.ms": 10})
    for key, value, hdrs, partition in records:
        kw: dict[str, Any] = {"headers": hdrs}
        if partition is not None:
            kw["partition"] = partition
        p.produce(topic, value, key, **kw)
    assert p.flush(30) == 0


def _value(m: Any) -> bytes:
    """A record's JSON, inflated when the worker compressed it (large state records)."""
    v = m.value() or b"null"
    compressed = ("sw_enc", b"zlib") in (m.headers() or [])
    return zlib.decompress(v) if compressed else v


def _read(
    conf: dict[str, Any],
    topic: str,
    want: int,
    timeout: float = 60,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Committed records of ``topic`` until ``want`` arrived and ``until`` holds (or the timeout)."""
    c = Consumer(
        {
            **conf,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        n = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, -2) for p in range(n)])
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while (len(got) < want or (until is not None and not until(got))) and time.monotonic() < deadline:
            got += [orjson.loads(_value(m)) for m in c.consume(500, 0.5) if m.error() is None]
        return got
    finally:
        c.close()


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body)
        for s in fam.samples
    }


class _Run:
    """``streamwatch run`` with the password in its environment; its whole output kept."""

    def __init__(self, cfg: Path, log: Path, password: str) -> None:
        self.port = free_port()
        self.log = log
        self._out = log.open("wb")
        self.proc = spawn_worker(cfg, self.port, self._out, {"STREAMWATCH_KAFKA__SASL_PASSWORD": password})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(
            lambda: self.proc.poll() is not None or http_get(self.url("/readyz"), 1)[0] == 200,
            timeout,
            "worker ready",
        )
        assert self.proc.poll() is None, self.text()[-3000:]

    def stop(self) -> int:
        code = terminate(self.proc)
        self._out.close()
        return code

    def text(self) -> str:
        return self.log.read_text(errors="replace")


# -- SASL and TLS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")],
)
def test_every_client_authenticates(
    secure_broker: SecureBroker, tmp_path: Path, protocol: str, mechanism: str
) -> None:
    sc = Scenario(model_id="m", events=10, change_at=5, numeric_features=2)
    cfg = _config(tmp_path / "c.yaml", _kafka(secure_broker, protocol, mechanism), sc.config())
    settings = _settings(cfg, secure_broker.password)
    ensure_topics(settings)  # the admin client: creates the five topics
    conf = client_config(settings)
    t = settings.topics
    c = Consumer({**conf, "group.id": "probe"})  # a consumer with the same settings sees them
    try:
        wait_until(
            lambda: (
                {t.predictions, t.labels, t.alerts, t.dead_letters, t.state}
                <= set(c.list_topics(timeout=10).topics)
            ),
            30,
            "the topics in the metadata",
        )
    finally:
        c.close()


@pytest.mark.parametrize(
    ("protocol", "mechanism"), [("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-512")]
)
def test_worker_consumes_and_produces_through_sasl(
    secure_broker: SecureBroker, tmp_path: Path, protocol: str, mechanism: str
) -> None:
    b = secure_broker
    # enough events after the change for the held data-drift alert to be released (quality
    # window + step after its detection)
    sc = Scenario(model_id="credit", events=2000, change_at=600, numeric_features=2, shift_sigmas=2.0, seed=3)
    preds, _ = generate(sc)
    cfg = _config(tmp_path / "c.yaml", _kafka(b, protocol, mechanism), sc.config())
    settings = _settings(cfg, b.password)
    conf = client_config(settings)
    run = _Run(cfg, tmp_path / "worker.log", b.password)
    try:
        run.wait_ready()
        records = [(b"credit", orjson.dumps(e), None, None) for e in preds]
        _produce(conf, settings.topics.predictions, [*records, (b"credit", b"{not json", None, None)])

        # the data-drift alert is held for the quality checks (one root cause, one alert), so it
        # may come in a later transaction than the prediction-drift one: read until it is there
        def drifted(got: list[dict[str, Any]]) -> bool:
            return any(a["kind"] == "data_drift" and a["feature"] == sc.shift_feature for a in got)

        alerts = _read(conf, settings.topics.alerts, 1, until=drifted)
        assert drifted(alerts), alerts
        assert len(_read(conf, settings.topics.dead_letters, 1)) == 1
        key = ("streamwatch_events_total", (("model", "credit"), ("type", "prediction")))
        wait_until(lambda: _metrics(run.port).get(key) == len(preds), 60, "every event counted")
        state = _read(conf, settings.topics.state, 1)  # checkpoints went through the SASL producer
        assert state
    finally:
        code = run.stop()
    assert code == 0, run.text()[-3000:]
    out = run.text()
    assert b.password not in out
    # a restart restores from the state topic through the SASL state reader
    again = _Run(cfg, tmp_path / "worker2.log", b.password)
    try:
        again.wait_ready()
        restored = [
            orjson.loads(line)
            for line in again.text().splitlines()
            if line.startswith("{") and '"event":"restore"' in line
        ]
        assert sum(r["models"] for r in restored) == 1, again.text()[-3000:]
    finally:
        assert again.stop() == 0
    assert b.password not in again.text()
    # `streamwatch check` shows the settings, never the password
    chk = subprocess.run(
        [sys.executable, "-m", "streamwatch", "check", "--config", str(cfg)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "STREAMWATCH_KAFKA__SASL_PASSWORD": b.password},
        timeout=120,
    )
    assert chk.returncode == 0, chk.stderr
    assert b.password not in chk.stdout + chk.stderr


@pytest.mark.parametrize(
    ("protocol", "mechanism"), [("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256")]
)
def test_wrong_password_fails_fast_and_clearly(
    secure_broker: SecureBroker, tmp_path: Path, protocol: str, mechanism: str
) -> None:
    wrong = "wrong-" + secrets.token_urlsafe(10)
    sc = Scenario(model_id="m", events=10, change_at=5, numeric_features=2)
    cfg = _config(tmp_path / "c.yaml", _kafka(secure_broker, protocol, mechanism), sc.config())
    run = _Run(cfg, tmp_path / "worker.log", wrong)
    t0 = time.monotonic()
    try:
        code = run.proc.wait(60)
    finally:
        run.stop()
    took = time.monotonic() - t0
    out = run.text()
    assert code == 1, out[-3000:]
    assert took < 30, f"took {took:.1f} s to give up"
    assert "refused the connection" in out and "Authentication failed" in out, out[-3000:]
    assert "kafka.sasl_password" in out  # says what to check
    assert wrong not in out and secure_broker.password not in out


def test_tls_without_the_ca_fails_fast(secure_broker: SecureBroker, tmp_path: Path) -> None:
    sc = Scenario(model_id="m", events=10, change_at=5, numeric_features=2)
    kafka = {**_kafka(secure_broker, "SASL_SSL", "PLAIN")}
    kafka.pop("ssl_ca_location")  # the system's CAs do not know the test CA
    cfg = _config(tmp_path / "c.yaml", kafka, sc.config())
    run = _Run(cfg, tmp_path / "worker.log", secure_broker.password)
    try:
        code = run.proc.wait(60)
    finally:
        run.stop()
    assert code == 1 and "certificate verify failed" in run.text(), run.text()[-3000:]
    assert secure_broker.password not in run.text()


def test_readiness_follows_the_broker(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """Not ready while no broker is reachable; ready again once it is back."""
    b = secure_broker
    sc = Scenario(model_id="m", events=10, change_at=5, numeric_features=2)
    cfg = _config(tmp_path / "c.yaml", _kafka(b, "SASL_PLAINTEXT", "PLAIN"), sc.config())
    run = _Run(cfg, tmp_path / "worker.log", b.password)
    try:
        run.wait_ready()
        b.run("down")
        try:
            wait_until(
                lambda: http_get(run.url("/readyz"), 1) == (503, b"not ready: no broker reachable\n"),
                60,
                "not ready while the broker is down",
            )
            assert http_get(run.url("/healthz"), 1)[0] == 200  # alive: only waiting
        finally:
            b.run("up")
        wait_until(
            lambda: run.proc.poll() is not None or http_get(run.url("/readyz"), 1)[0] == 200,
            120,
            "ready again",
        )
        assert run.proc.poll() is None, run.text()[-3000:]
    finally:
        run.stop()
    assert b.password not in run.text()


# -- state safety --------------------------------------------------------------------------------


def test_corrupt_state_records_are_skipped_with_alerts(kafka: str, tmp_path: Path) -> None:
    """Records written into the state topic before the worker starts: one valid snapshot and
    garbage, truncated, foreign-version, wrong-model and header-less records."""
    sc = Scenario(model_id="m0", events=300, change_at=150, numeric_features=2, seed=5)
    preds, _ = generate(sc)
    features = sc.config()["m0"]
    models = {f"m{i}": features for i in range(5)}
    kafka_section = {"bootstrap_servers": kafka, "group_id": f"g-{uuid.uuid4().hex[:8]}"}
    cfg = _config(tmp_path / "c.yaml", kafka_section, models)
    settings = load_config(cfg)
    t = settings.topics
    ensure_topics(settings)

    engine = Engine(settings)
    engine.process_predictions([RawMessage(orjson.dumps(e)) for e in preds])
    good = next(s.data for s in engine.take_dirty() if s.model_id == "m0")
    doc = orjson.loads(good)
    # committed offsets (0) for both input partitions of both units, as a previous worker leaves them
    c = Consumer(
        {"bootstrap.servers": kafka, "group.id": settings.kafka.group_id, "enable.auto.commit": False}
    )
    try:
        offsets = [TopicPartition(topic, p, 0) for topic in (t.predictions, t.labels) for p in (0, 1)]
        c.commit(offsets=offsets, asynchronous=False)
    finally:
        c.close()
    tag = {t.predictions: 0, t.labels: 0}
    model, ckpt = headers(tag, b"model"), headers(tag, b"checkpoint")
    _produce(
        {"bootstrap.servers": kafka},
        t.state,
        [
            (b"m0", good, model, 0),  # valid: restored
            (b"m1", b"\x00\x9f\xffgarbage", model, 0),  # not_json
            (b"m2", orjson.dumps({**doc, "model_id": "m2", "version": 999}), model, 0),  # unsupported_version
            (b"m3", good, model, 0),  # wrong_model: m0's state under m3
            (b"\x00checkpoint", b"{}", ckpt, 0),
            (b"m4", good[: len(good) // 3], model, 1),  # truncated: not_json
            (b"m1", b"foreign record", None, 1),  # bad_headers
            (b"\x00checkpoint", b"{}", ckpt, 1),
        ],
    )
    expected = Counter({"not_json": 2, "unsupported_version": 1, "wrong_model": 1, "bad_headers": 1})

    first: set[str] = set()
    for n in range(2):  # twice: the same records give the same alert ids
        run = _Run(cfg, tmp_path / f"worker{n}.log", "unused")
        try:
            run.wait_ready()
            alerts = [
                a
                for a in _read({"bootstrap.servers": kafka}, t.alerts, 5 * (n + 1))
                if a["kind"] == "state_corrupt"
            ]
            assert len(alerts) == 5 * (n + 1), alerts
            # the second restore finds the same records: each alert id once more
            by_id = Counter(a["alert_id"] for a in alerts)
            assert set(by_id.values()) == {n + 1}, by_id
            first = first or set(by_id)
            assert set(by_id) == first
            fresh = list({a["alert_id"]: a for a in alerts}.values())
            assert Counter(a["details"]["reason"] for a in fresh) == expected
            assert all(a["status"] == "firing" and a["detector"] == "state_decoder" for a in fresh)
            m = _metrics(run.port)
            for reason, count in expected.items():
                assert m[("streamwatch_state_corrupt_records_total", (("reason", reason),))] == count
            assert m[("streamwatch_state_corrupt_records_total", (("reason", "foreign_format"),))] == 0
            assert http_get(run.url("/readyz"))[0] == 200 and run.proc.poll() is None
            restore = [
                orjson.loads(line)
                for line in run.text().splitlines()
                if line.startswith("{") and '"event":"restore"' in line
            ]
            assert sum(r["models"] for r in restore) == 1, run.text()[-3000:]  # m0
        finally:
            assert run.stop() == 0, run.text()[-3000:]
        assert "Traceback" not in run.text()
    assert len(first) == 5
