# The two quick-start commands are `make demo` and `make test`; each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit lint down kafka-up prometheus-up clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## venv with streamwatch and its dev tools, Kafka jars, Prometheus, Chromium
	deploy/local/kafka.sh fetch
	deploy/local/prometheus.sh install
	deploy/local/chromium.sh install

kafka-up: setup
	deploy/local/kafka.sh up

prometheus-up: setup
	deploy/local/prometheus.sh up

demo: kafka-up prometheus-up  ## local Kafka + Prometheus, the worker, a drift demo with alerts and metrics
	$(PY) -m streamwatch.demo

test: kafka-up  ## unit and end-to-end tests (real Kafka broker, real Prometheus)
	$(VENV)/bin/pytest

test-unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check streamwatch tests bench
	$(VENV)/bin/ruff format --check streamwatch tests bench
	$(VENV)/bin/mypy

down:  ## stop the local services
	-deploy/local/prometheus.sh down
	-deploy/local/kafka.sh down

clean: down
	rm -rf .cache $(VENV)
