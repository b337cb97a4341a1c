"""Deployment files that cannot run here (no Docker engine) are still checked for what they reference."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streamwatch.config import load_config

REPO = Path(__file__).parents[2]


def test_compose_services_and_mounts_exist() -> None:
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert set(doc["services"]) == {"kafka", "streamwatch", "demo-producer", "prometheus", "grafana"}
    for svc in doc["services"].values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            assert (REPO / src).exists(), f"{src} is mounted but missing"
    worker = doc["services"]["streamwatch"]
    assert worker["environment"]["STREAMWATCH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in doc["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.docker.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["streamwatch:9400"]


def test_example_config_is_valid() -> None:
    s = load_config(REPO / "examples/streamwatch.yaml")
    assert s.metrics.port == 9400 and "credit-risk" in s.models


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.docker.yml"])
def test_prometheus_configs_pass_promtool(name: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make setup installs it)")
    doc = yaml.safe_load((REPO / "deploy/prometheus" / name).read_text())
    # inside the container the rules are mounted at /etc/prometheus/rules: check the repo's copy
    doc["rule_files"] = [
        str(REPO / "deploy/prometheus/rules" / Path(f).name) for f in doc.get("rule_files", [])
    ]
    assert doc["rule_files"], "the alerting rules are not loaded"
    cfg = tmp_path / name
    cfg.write_text(yaml.safe_dump(doc))
    out = subprocess.run([promtool, "check", "config", str(cfg)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
