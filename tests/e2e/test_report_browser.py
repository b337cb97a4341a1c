"""The HTML report in a real browser (headless Debian Chromium through chromedriver): it renders
its sections and charts, logs no console error and loads nothing; once from a replay of files,
once from the committed state of a worker running on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamwatch.simulate import Scenario, generate
from tests.conftest import REPO, write_config
from tests.e2e.conftest import produce, wait_done

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DRIFT = {"reference_size": 500, "window_size": 500, "step": 50}
SCENARIO = Scenario(events=6000, change_at=3000, numeric_features=2, shift_sigmas=1.5, seed=5)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        subprocess.run([str(REPO / "deploy/local/chromium.sh"), "install"], check=True, timeout=900)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def report(args: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    """``python -m streamwatch.report ... --out OUT`` as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "streamwatch.report", *args, "--out", str(out)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_in_browser(driver: Any, page: Path, model: str) -> Any:
    """Open ``page``; check what renders, that nothing was fetched and nothing was logged."""
    from selenium.webdriver.common.by import By

    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.as_uri())
    assert driver.title.startswith("streamwatch report")
    models = driver.find_elements(By.CSS_SELECTOR, "section.model")
    assert [m.get_attribute("data-model") for m in models] == [model]
    sec = models[0]
    for part in ("monitored", "distributions", "drift", "performance", "alerts"):
        el = sec.find_element(By.CSS_SELECTOR, f"section.{part}")
        assert el.is_displayed() and el.size["height"] > 50, part
    # charts are drawn: bars, lines and the timeline have a real size on the page
    bars = sec.find_elements(By.CSS_SELECTOR, "section.distributions svg.chart rect.s-cur")
    assert len(bars) >= 10 and all(b.size["height"] >= 0 for b in bars)
    lines = sec.find_elements(By.CSS_SELECTOR, "section.drift svg.chart polyline.s-score")
    assert lines and lines[0].size["width"] > 100
    timeline = sec.find_element(By.CSS_SELECTOR, "section.alerts svg.timeline")
    assert timeline.size["width"] > 300
    drift = [
        li.text
        for li in sec.find_elements(By.CSS_SELECTOR, "ol.alerts li.firing")
        if "data_drift · income" in li.text
    ]
    assert drift and "after it began" in drift[0], drift
    # nothing loaded beside the page itself, and no console error (CSP violations included)
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    return sec


def test_report_of_a_replay_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    preds, labels = generate(SCENARIO)
    (tmp_path / "p.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in preds))
    (tmp_path / "l.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in labels))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump({"drift": DRIFT, "performance": {"window_seconds": 10}, "models": SCENARIO.config()})
    )
    out = tmp_path / "report.html"
    r = report(
        [
            "--config",
            str(cfg),
            "--predictions",
            str(tmp_path / "p.jsonl"),
            "--labels",
            str(tmp_path / "l.jsonl"),
        ],
        out,
    )
    assert r.returncode == 0, r.stderr
    check_in_browser(browser, out, SCENARIO.model_id)


def test_report_from_a_running_workers_state(
    browser: Any, kafka: str, topics: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "config.yaml", kafka, topics, SCENARIO.config(), drift=DRIFT)
    settings = yaml.safe_load(cfg.read_text())
    worker = start_worker(cfg)
    preds, labels = generate(SCENARIO)
    key = SCENARIO.model_id
    produce(kafka, topics["predictions"], [(key, orjson.dumps(e)) for e in preds])
    produce(kafka, topics["labels"], [(key, orjson.dumps(e)) for e in labels])
    wait_done(kafka, settings["kafka"]["group_id"], [topics["predictions"], topics["labels"]], 120)
    out = tmp_path / "state.html"
    r = report(["--config", str(cfg), "--from-state", "--model", key], out)
    assert r.returncode == 0, r.stderr
    assert "committed state of worker group" in r.stdout
    sec = check_in_browser(browser, out, key)
    text = sec.text
    assert f"{len(preds):,} predictions and {len(labels):,} labels seen" in text
    assert worker.proc.poll() is None  # the report only read: the worker runs on


def test_report_from_state_without_a_broker_fails_cleanly(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"models": SCENARIO.config()}))
    port = 1  # nothing listens there
    r = report(
        ["--config", str(cfg), "--from-state", "--bootstrap-servers", f"127.0.0.1:{port}", "--timeout", "3"],
        tmp_path / "r.html",
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot reach Kafka" in r.stderr
