"""Shared fixtures. End-to-end tests use the real local Kafka broker (started here with
deploy/local/kafka.sh when it is not running) and a real Prometheus server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import pytest
import yaml

REPO = Path(__file__).parents[1]
BOOTSTRAP = os.environ.get("STREAMWATCH_TEST_BOOTSTRAP", "127.0.0.1:9092")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kafka() -> str:
    """Bootstrap servers of a running broker; starts the local one if needed."""
    host, port = BOOTSTRAP.rsplit(":", 1)
    if not _port_open(host, int(port)):
        subprocess.run([str(REPO / "deploy/local/kafka.sh"), "up"], check=True, timeout=600)
    return BOOTSTRAP


@pytest.fixture
def topics() -> dict[str, str]:
    """Fresh topic names per test, so tests never see each other's events."""
    tag = uuid.uuid4().hex[:8]
    return {
        "predictions": f"t{tag}.predictions",
        "labels": f"t{tag}.labels",
        "alerts": f"t{tag}.alerts",
        "dead_letters": f"t{tag}.dlq",
    }


def write_config(
    path: Path, bootstrap: str, topics: dict[str, str], models: dict[str, Any], **extra: Any
) -> Path:
    # a state topic of its own per test: a shared one would tie tests' partition counts together
    topics = {"state": f"{topics['predictions']}.state", **topics}
    doc = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{uuid.uuid4().hex[:8]}"},
        "topics": {**topics, "partitions": 2},
        "batch": {"max_events": 500, "timeout_seconds": 0.1, "commit_interval_seconds": 0.5},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "models": models,
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def wait_until(cond: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if it has not exited within 30 s; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)


def spawn_worker(
    config: Path, port: int, out: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`streamwatch run --config CONFIG --metrics-port PORT`, output (and stderr) to ``out``."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(config), "--metrics-port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


class Worker:
    """`streamwatch run` in a child process, as a user would start it."""

    def __init__(self, config: Path, log: Path) -> None:
        self.metrics_port = free_port()
        self.log = log
        self._out = log.open("wb")
        self.proc = spawn_worker(config, self.metrics_port, self._out)
        try:
            wait_until(
                lambda: self.proc.poll() is not None or http_get(self.url("/readyz"), 1)[0] == 200,
                60,
                "worker ready",
            )
        except Exception:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def stop(self) -> int:
        code = terminate(self.proc)
        self._out.close()
        return code


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def start(config: Path) -> Worker:
        w = Worker(config, tmp_path / f"worker{len(workers)}.log")
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


class PrometheusServer:
    """A real Prometheus that scrapes the targets and evaluates ``rule_files`` every second."""

    def __init__(self, targets: list[str], workdir: Path, rule_files: Sequence[Path] = ()) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            subprocess.run([str(REPO / "deploy/local/prometheus.sh"), "install"], check=True, timeout=900)
            binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        self.port = free_port()
        cfg = workdir / "prometheus.yml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(p) for p in rule_files],
                    "scrape_configs": [{"job_name": "streamwatch", "static_configs": [{"targets": targets}]}],
                }
            )
        )
        self.log = workdir / "prometheus.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: self.proc.poll() is not None or self.get("/-/ready")[0] == 200, 60, "prometheus ready"
            )
        except Exception:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.port}{path}")

    def api(self, path: str, **params: str) -> Any:
        status, body = self.get(f"/api/v1/{path}?{urlencode(params)}" if params else f"/api/v1/{path}")
        doc = json.loads(body) if body else {"status": "no answer", "http": status}
        if status != 200 or doc.get("status") != "success":
            raise AssertionError(f"{path} {params}: {doc}")
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=promql)["result"])

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    servers: list[PrometheusServer] = []

    def start(targets: list[str]) -> PrometheusServer:
        d = tmp_path / f"prom{len(servers)}"
        d.mkdir()
        s = PrometheusServer(targets, d)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
