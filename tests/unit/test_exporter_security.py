"""The metrics endpoint's TLS and basic auth, readiness and liveness, and the Kafka security
settings (what reaches librdkafka, and that secrets never show)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamwatch.config import ConfigError, Settings, load_config
from streamwatch.engine import Engine
from streamwatch.exporter import BasicAuth, Exporter, Health
from streamwatch.runtime.kafka import KafkaWorker, client_config

MODELS = {"m": {"features": {"x": "numeric"}}}
PASSWORD = "s3cr3t-Scrape-Pw"


def _settings(**sections: Any) -> Settings:
    return load_config(None, models=MODELS, **sections)


# -- certificates ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=60)

    key = ["-newkey", "rsa:2048", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        extra = ["-extfile", f"{name}.ext"]
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", *extra,
        )  # fmt: skip
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Exporter] = []

    def start(**metrics: Any) -> tuple[Exporter, int]:
        s = _settings(metrics={"host": "127.0.0.1", "port": 0, **metrics})
        ex = Exporter(Engine(s))
        started.append(ex)
        return ex, ex.serve(s.metrics.host, s.metrics.port)

    yield start
    for ex in started:
        ex.close()


def get(
    port: int, path: str, *, tls: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=10)
        if tls is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    )
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _client_tls(pki: dict[str, Path], cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    if cert:
        ctx.load_cert_chain(pki["client.pem"], pki["client.key"])
    return ctx


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_serves_metrics_over_https(pki: dict[str, Path], serve: Any) -> None:
    _, port = serve(tls_cert_file=str(pki["server.pem"]), tls_key_file=str(pki["server.key"]))
    status, body, _ = get(port, "/metrics", tls=_client_tls(pki))
    assert status == 200 and b"streamwatch_" in body
    # a plain-HTTP client gets no answer, and does not disturb the server
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        get(port, "/metrics")
    # nor does a client that connects and says nothing
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        assert get(port, "/healthz", tls=_client_tls(pki))[0] == 200
    # a client that does not trust the certificate refuses it
    with pytest.raises(ssl.SSLError):
        get(port, "/metrics", tls=ssl.create_default_context())


def test_tls_minimum_version(pki: dict[str, Path], serve: Any) -> None:
    _, port = serve(
        tls_cert_file=str(pki["server.pem"]), tls_key_file=str(pki["server.key"]), tls_min_version="TLSv1.3"
    )
    old = _client_tls(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        get(port, "/metrics", tls=old)
    assert get(port, "/metrics", tls=_client_tls(pki))[0] == 200


def test_mutual_tls_requires_a_client_certificate(pki: dict[str, Path], serve: Any) -> None:
    _, port = serve(
        tls_cert_file=str(pki["server.pem"]),
        tls_key_file=str(pki["server.key"]),
        tls_client_ca_file=str(pki["ca.pem"]),
    )
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        get(port, "/metrics", tls=_client_tls(pki))
    status, body, _ = get(port, "/metrics", tls=_client_tls(pki, cert=True))
    assert status == 200 and b"streamwatch_" in body


def test_unreadable_tls_files_fail_as_oserror_with_the_setting(tmp_path: Path) -> None:
    s = _settings(metrics={"host": "127.0.0.1", "port": 0, "tls_cert_file": str(tmp_path / "missing.pem")})
    with pytest.raises(OSError, match="tls_cert_file") as info:
        Exporter(Engine(s)).serve("127.0.0.1", 0)
    assert info.value.strerror and "missing.pem" in info.value.strerror


def test_tls_settings_need_a_certificate() -> None:
    with pytest.raises(ConfigError, match="tls_cert_file"):
        _settings(metrics={"tls_key_file": "/k.pem"})


# -- basic auth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        {"basic_auth_password": PASSWORD},
        {"basic_auth_password_hash": "sha256:" + hashlib.sha256(PASSWORD.encode()).hexdigest()},
    ],
    ids=["password", "sha256"],
)
def test_basic_auth_guards_metrics(serve: Any, given: dict[str, str]) -> None:
    _, port = serve(basic_auth_username="prometheus", **given)
    status, _, hdrs = get(port, "/metrics")
    assert status == 401 and hdrs["WWW-Authenticate"].startswith("Basic")
    for headers in (
        basic("prometheus", "wrong"),
        basic("someone", PASSWORD),
        basic("prometheus", PASSWORD + "x"),
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
    ):
        assert get(port, "/metrics", headers=headers)[0] == 401, headers
    status, body, _ = get(port, "/metrics", headers=basic("prometheus", PASSWORD))
    assert status == 200 and b"streamwatch_" in body
    # the probes stay open: Kubernetes probes do not send credentials
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz")[0] == 503


def test_basic_auth_and_tls_together(pki: dict[str, Path], serve: Any) -> None:
    _, port = serve(
        tls_cert_file=str(pki["server.pem"]),
        tls_key_file=str(pki["server.key"]),
        basic_auth_username="prometheus",
        basic_auth_password=PASSWORD,
    )
    assert get(port, "/metrics", tls=_client_tls(pki))[0] == 401
    assert get(port, "/metrics", tls=_client_tls(pki), headers=basic("prometheus", PASSWORD))[0] == 200


def test_basic_auth_keeps_a_digest_only() -> None:
    s = _settings(metrics={"basic_auth_username": "p", "basic_auth_password": PASSWORD})
    auth = BasicAuth.from_settings(s.metrics)
    assert auth is not None and PASSWORD not in repr(vars(auth))


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        ({"basic_auth_username": "p"}, "exactly one"),
        (
            {
                "basic_auth_username": "p",
                "basic_auth_password": "a",
                "basic_auth_password_hash": "sha256:" + "0" * 64,
            },
            "exactly one",
        ),
        ({"basic_auth_password": PASSWORD}, "needs metrics.basic_auth_username"),
        ({"basic_auth_username": "p", "basic_auth_password_hash": "bcrypt:" + PASSWORD}, "64 hex digits"),
    ],
)
def test_basic_auth_settings_are_checked_without_echoing_secrets(metrics: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        _settings(metrics=metrics)
    assert PASSWORD not in str(info.value)


# -- readiness and liveness --------------------------------------------------------------------


def test_readiness_transitions(serve: Any) -> None:
    ex, port = serve()
    h = ex.health

    def readyz() -> tuple[int, bytes]:
        status, body, _ = get(port, "/readyz")
        return status, body

    assert readyz() == (503, b"not ready: no partition assignment (starting or stopping)\n")
    h.ready = True
    assert readyz() == (200, b"ready\n")
    with h.restoring():
        assert readyz() == (503, b"not ready: restoring state\n")
        with h.restoring():  # nested (a rewind while assigning)
            pass
        assert readyz()[0] == 503
    assert readyz()[0] == 200
    h.connected = False
    assert readyz() == (503, b"not ready: no broker reachable\n")
    h.connected = True
    assert readyz()[0] == 200
    h.ready = False  # stopping
    assert readyz()[0] == 503


def test_liveness_fails_when_the_loop_stalls_and_a_restore_gets_its_timeout() -> None:
    h = Health(stall_seconds=60, restore_seconds=120)
    assert h.alive
    h.last_beat = time.monotonic() - 61
    assert not h.alive
    with h.restoring():
        h.last_beat = time.monotonic() - 61
        assert h.alive  # a restore holds the loop for up to restore_timeout_seconds
        h.last_beat = time.monotonic() - 181
        assert not h.alive
    assert h.alive  # the end of the restore counts as a beat


def test_healthz_reports_a_stalled_loop(serve: Any) -> None:
    ex, port = serve()
    assert get(port, "/healthz")[:2] == (200, b"ok\n")
    ex.health.last_beat = time.monotonic() - ex.health.stall_seconds - 1
    assert get(port, "/healthz")[:2] == (503, b"main loop stalled\n")


def test_worker_readiness_follows_broker_connection() -> None:
    # nothing listens on port 9: the clients are created but never connect
    s = _settings(kafka={"bootstrap_servers": "127.0.0.1:9"})
    ex = Exporter(Engine(s))
    w = KafkaWorker(s, ex.collector.engine, ex)
    try:
        assert ex.health.restore_seconds == s.state.restore_timeout_seconds
        ex.health.ready = True
        w._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        assert ex.health.readiness() == (False, "not ready: no broker reachable")
        w._on_stats(json.dumps({"brokers": {"b:9092/1": {"state": "UP"}}}))
        assert ex.health.readiness() == (True, "ready")
        w._on_stats(json.dumps({"brokers": {"b:9092/1": {"state": "TRY_CONNECT"}}}))
        assert not ex.health.readiness()[0]
        w._on_stats("not json")  # ignored
        assert not ex.health.readiness()[0]
    finally:
        w.consumer.close()


# -- Kafka security settings -------------------------------------------------------------------


def test_security_fields_reach_every_client_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWATCH_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAMWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    s = _settings(
        kafka={
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "sw",
            "ssl_ca_location": "/etc/ca.pem",
            "client": {"client.id": "x", "ssl.endpoint.identification.algorithm": "https"},
        }
    )
    conf = client_config(s)
    assert conf["sasl.password"] == PASSWORD and conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512" and conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["client.id"] == "x"
    # the secret shows nowhere else
    assert PASSWORD not in repr(s) and PASSWORD not in s.model_dump_json()
    assert s.kafka.redacted_client()["sasl.password"] == "***"
    assert PASSWORD not in str(s.kafka.redacted_client())


def test_worker_clients_get_the_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    class Fake:
        def __init__(self, conf: dict[str, Any]) -> None:
            seen.append(conf)

        def close(self) -> None:
            pass

    import streamwatch.runtime.kafka as rk

    monkeypatch.setattr(rk, "Consumer", Fake)
    monkeypatch.setattr(rk, "Producer", Fake)
    s = _settings(
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "sw",
            "sasl_password": PASSWORD,
        }
    )
    ex = Exporter(Engine(s))
    w = KafkaWorker(s, ex.collector.engine, ex)
    w._restorer_consumer()
    assert len(seen) == 3  # consumer, producer, state reader
    for conf in seen:
        assert conf["sasl.password"] == PASSWORD and conf["security.protocol"] == "SASL_PLAINTEXT"


def test_client_map_and_fields_must_agree() -> None:
    with pytest.raises(ConfigError, match=r"kafka.sasl_password and kafka.client\['sasl.password'\]") as info:
        _settings(
            kafka={
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password": PASSWORD,
                "client": {"sasl.password": "other-" + PASSWORD},
            }
        )
    assert PASSWORD not in str(info.value)


def test_sasl_needs_credentials_and_a_sasl_protocol() -> None:
    with pytest.raises(ConfigError, match=r"needs sasl\.password"):
        _settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"})
    with pytest.raises(ConfigError, match="needs security_protocol SASL"):
        _settings(kafka={"sasl_mechanism": "PLAIN"})
    # the Kubernetes way: protocol and mechanism in `client`, credentials from the environment
    s = _settings(
        kafka={
            "client": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"},
            "sasl_username": "u",
            "sasl_password": "p",
        }
    )
    assert s.kafka.librdkafka()["sasl.password"] == "p"


def test_a_secret_that_fails_validation_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        _settings(kafka={"sasl_password": 987654321})
    assert "sasl_password" in str(info.value) and "987654321" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        _settings(metrics={"basic_auth_username": "u", "basic_auth_password": 987654321})
    assert "987654321" not in str(info.value)


def test_logged_settings_show_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from streamwatch.logs import configure_logging

    monkeypatch.setenv("STREAMWATCH_KAFKA__CLIENT__SASL_PASSWORD", PASSWORD)
    s = _settings(
        kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
        metrics={"basic_auth_username": "p", "basic_auth_password": PASSWORD + "2"},
    )
    for fmt in ("json", "text"):
        out = io.StringIO()
        configure_logging("info", fmt, stream=out)
        try:
            log = logging.getLogger("streamwatch.test")
            log.info("settings %s", s.kafka, extra={"settings": s, "kafka": s.kafka})
            log.info("metrics %s", s.metrics)
        finally:
            configure_logging("info", "json")
        text = out.getvalue()
        assert PASSWORD not in text and "SASL_SSL" in text, text
