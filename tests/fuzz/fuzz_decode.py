"""Coverage-guided fuzzing of the decode/validate path with atheris (run by hand, not by pytest).

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/fuzz_decode.py -atheris_runs=200000 [-max_len=4096] [corpus_dir]

Each input is one prediction message and one label message (the bytes as they are) through a
warmed-up :class:`~streamwatch.engine.Engine`. A crash is any exception out of the engine, or a
message that ends neither as an event nor as a dead letter with a known reason. The seed corpus
is built from valid events, so mutations start from inputs that reach the monitors.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["streamwatch"]):
    import orjson

    from streamwatch.config import Settings
    from streamwatch.decode import RawMessage, Reason
    from streamwatch.engine import Engine

T0 = 1_795_774_502_000
SETTINGS = Settings(
    models={
        "clf": {"features": {"x": "numeric", "y": "numeric", "c": "categorical"}},
        "reg": {"features": {"x": "numeric", "c": "categorical"}},
    },
    drift={"reference_size": 50, "window_size": 50, "step": 10, "cusum": False},
    quality={"window_size": 100, "step": 10},
    performance={"max_open_predictions": 500},
    limits={"max_message_bytes": 65_536, "max_features": 50, "max_category_values": 40},
)
ENGINE = Engine(SETTINGS)
for _i in range(120):  # past warm-up, so mutations reach the detectors
    for _m in ("clf", "reg"):
        _ev = {
            "event_id": f"e{_i}",
            "model_id": _m,
            "timestamp": T0 + 1000 * _i,
            "features": {"x": _i % 13 / 3, "y": _i % 7, "c": "abc"[_i % 3]},
            "prediction": {"label": "yes", "scores": {"yes": 0.6, "no": 0.4}}
            if _m == "clf"
            else {"value": 1.5},
        }
        ENGINE.process_predictions([RawMessage(orjson.dumps(_ev), T0, "p", 0, _i)])


def _one(msg: RawMessage, labels: bool) -> None:
    r = (ENGINE.process_labels if labels else ENGINE.process_predictions)([msg])
    if r.events + len(r.dead_letters) != 1:
        raise AssertionError(f"message neither processed nor dead-lettered: {r}")
    for d in r.dead_letters:
        if d.reason not in Reason.ALL:
            raise AssertionError(f"unknown reason {d.reason}")
        orjson.loads(d.body())
    for a in r.alerts:
        orjson.dumps(a.to_event(T0))


def test_one_input(data: bytes) -> None:
    _one(RawMessage(data, T0, "predictions", 0, 1), labels=False)
    _one(RawMessage(data, T0, "labels", 0, 1), labels=True)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
