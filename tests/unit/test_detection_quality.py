"""The quick detection benchmark runs here and checks the direction of every target of the
detection issue (bench/detection.py; figures in docs/detection.md). No timings are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "detection.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/detection.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(out.read_text()))


@pytest.mark.parametrize("stream", ["E1", "G1"])
def test_streamwatch_beats_river_defaults_and_stays_above_the_oracle(
    quick: dict[str, Any], stream: str
) -> None:
    d = quick["streams"][stream]["detectors"]
    ours, adwin, oracle = (
        d["streamwatch CUSUM"],
        d["river ADWIN (default)"],
        d["oracle CUSUM (knows both distributions)"],
    )
    assert ours["missed"] == 0
    assert ours["mean_delay"] < adwin["mean_delay"]
    assert ours["mean_delay"] >= 0.8 * oracle["mean_delay"]  # beating the oracle would mean a bug
    assert ours["false_alarms_per_10k"] <= 1.0  # target 0.1; few null values in quick mode


def test_every_change_is_found(quick: dict[str, Any]) -> None:
    for sid in ("E1", "E3", "G1", "G2"):
        assert quick["streams"][sid]["detectors"]["streamwatch CUSUM"]["missed"] == 0, sid


def test_achieved_false_alarm_rate_is_near_the_configured_one(quick: dict[str, Any]) -> None:
    for row in quick["calibration"]:
        if row["configured_arl0"] == 10_000:  # enough alarms in quick mode to tell (about 190)
            assert 0.7 <= row["achieved_over_configured"] <= 1.3, row


def test_window_tests_hold_their_level_and_power(quick: dict[str, Any]) -> None:
    rows = quick["window_tests"]
    for r in rows:
        if r["shift_sd"] == 0:
            assert r["alarm_rate"] <= 0.03, r  # alpha 0.01 per test, at every window size
        if r["shift_sd"] == 0.5 and r["n"] >= 500:
            assert r["alarm_rate"] >= 0.95, r
    benign = {(r["statistic"], r["effect_floor"] > 0): r["alarm_rate"] for r in rows if r["shift_sd"] == 0.05}
    for stat in ("psi", "js", "ks", "wasserstein"):
        assert benign[(stat, True)] <= 0.05  # the effect floor ignores a 0.05 sd shift at n = 20 000
    assert benign[("ks", False)] > 0.5  # without it, a calibrated test flags it
