"""Unit change: known conversions are found and named; clean data and ordinary drift stay quiet."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from streamwatch.quality.unit_change import detect_unit_change

P = np.linspace(0.0, 1.0, 101)
Gen = Callable[[np.random.Generator, int], np.ndarray]

HEIGHT: Gen = lambda r, n: r.normal(170.0, 10.0, n)  # noqa: E731
MASS: Gen = lambda r, n: r.gamma(3.0, 20.0, n)  # noqa: E731 - skewed, positive
TEMP_C: Gen = lambda r, n: r.normal(20.0, 5.0, n)  # noqa: E731
SHARE: Gen = lambda r, n: r.beta(2.0, 5.0, n)  # noqa: E731
STANDARD: Gen = lambda r, n: r.normal(0.0, 1.0, n)  # noqa: E731
COUNTS: Gen = lambda r, n: r.poisson(3.0, n).astype(float)  # noqa: E731
LOGN: Gen = lambda r, n: r.lognormal(3.0, 1.0, n)  # noqa: E731


def _run(ref: Gen, cur: Callable[[np.random.Generator, int], np.ndarray], seed: int, m: int, n: int = 500):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    q = np.quantile(ref(rng, m), P)
    return detect_unit_change(q, cur(rng, n), reference_count=m)


@pytest.mark.parametrize(
    ("ref", "convert", "name"),
    [
        (HEIGHT, lambda x: x * 2.54, "in → cm"),
        (HEIGHT, lambda x: x / 2.54, "cm → in"),
        (MASS, lambda x: x * 1000.0, "kg → g or s → ms or m → mm"),
        (MASS, lambda x: x * 2.20462, "kg → lb"),
        (TEMP_C, lambda x: x * 1.8 + 32.0, "°C → °F"),
        (lambda r, n: r.normal(68.0, 9.0, n), lambda x: (x - 32.0) / 1.8, "°F → °C"),
        (SHARE, lambda x: x * 100.0, "fraction → percent or m → cm"),
        (MASS, lambda x: x / 60.0, "min → h or s → min"),
    ],
)
def test_known_conversions_are_found_and_named(
    ref: Gen, convert: Callable[[np.ndarray], np.ndarray], name: str
) -> None:
    found = 0
    for seed in range(30):
        r = _run(ref, lambda rng, n: convert(ref(rng, n)), seed, m=[1000, 2000, 5000][seed % 3])
        found += r.detected and r.conversion == name
    assert found == 30


def test_result_evidence_and_message() -> None:
    r = _run(HEIGHT, lambda rng, n: HEIGHT(rng, n) * 2.54, 0, m=5000)
    assert r.detected and r.factor == pytest.approx(2.54, rel=0.05) and r.r2 > 0.99
    assert r.conversion_factor == 2.54 and r.evidence["conversion"] == "in → cm"
    assert r.message(["height_cm"], "10:42") == (
        "height_cm looks like its reference times 2.54 (in → cm) since 10:42 — likely a unit change"
    )
    t = _run(TEMP_C, lambda rng, n: TEMP_C(rng, n) * 1.8 + 32, 0, m=5000)
    assert "times 1.8 + 32 (°C → °F)" in t.message("temp")


def test_unknown_factor_is_reported_raw() -> None:
    r = _run(HEIGHT, lambda rng, n: HEIGHT(rng, n) * 25.0, 1, m=5000)
    assert r.detected and r.conversion is None and r.conversion_factor == pytest.approx(25.0, rel=0.02)
    assert "no known conversion" in r.message("height")


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        (HEIGHT, HEIGHT),
        (MASS, MASS),
        (STANDARD, STANDARD),
        (COUNTS, COUNTS),
        (LOGN, LOGN),
        (HEIGHT, lambda r, n: r.normal(180.0, 10.0, n)),  # mean shift of 1 sd
        (HEIGHT, lambda r, n: r.normal(160.0, 10.0, n)),
        (STANDARD, lambda r, n: r.normal(1.0, 1.0, n)),
        (HEIGHT, lambda r, n: r.normal(170.0, 20.0, n)),  # variance change
        (HEIGHT, lambda r, n: r.normal(170.0, 25.4, n)),  # variance change by exactly 2.54
        (STANDARD, lambda r, n: r.normal(0.0, 2.0, n)),
        (COUNTS, lambda r, n: r.poisson(5.0, n).astype(float)),
        (LOGN, lambda r, n: r.lognormal(3.5, 1.0, n)),  # a 65 % multiplicative drift
    ],
)
def test_clean_data_and_ordinary_drift_stay_quiet(ref: Gen, cur: Gen) -> None:
    seeds = 200 if ref is HEIGHT else 100
    for seed in range(seeds):
        r = _run(ref, cur, seed, m=[1000, 2000, 5000][seed % 3])
        assert not r.detected, (seed, r.conversion, r.factor)


def test_too_few_values_or_constant_reference_give_no_decision() -> None:
    q = np.quantile(np.random.default_rng(0).normal(170, 10, 1000), P)
    assert detect_unit_change(q, np.full(50, 170.0 * 2.54)).evidence["reason"] == "too few values"
    assert not detect_unit_change(np.full(101, 3.0), np.full(500, 3000.0)).detected
