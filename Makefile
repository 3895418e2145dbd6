# Everything installs into .venv from nothing; Kafka tests fetch the broker's jars with Maven.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8005

.PHONY: install install-test install-lint lint browser postgres jdk demo test test-fast test-unit bench bench-kafka bench-cluster bench-quick kafka-start kafka-stop schemas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What running needs (make demo); the test extras come on top (make test).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# ruff and mypy on top of the test extras (mypy reads the benchmarks' imports too).
$(VENV)/.installed-lint: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-lint: $(VENV)/.installed-lint

lint: install-lint  ## ruff check, ruff format --check and mypy --strict over src/ and bench/ (pyproject's settings)
	$(BIN)/ruff check src bench
	$(BIN)/ruff format --check src bench
	$(BIN)/mypy

# Debian's chromium + chromedriver for tests/test_dashboard.py (Selenium, headless); skipped when present.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

# Debian's PostgreSQL server binaries: the peer in the benchmarks' scale section (bench/postgres_peer.py).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing postgresql with apt-get"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	fi

# A JDK (java + javac) and Maven for the Kafka tests: the broker runs from Maven Central jars, and
# tests/kafka/test_interop.py compiles a producer against Apache Kafka's Java client; skipped when present.
jdk:
	@if ! command -v javac >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing openjdk-17-jdk-headless and maven with apt-get"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven; \
	fi

demo: install  ## the demo server on port 8005 with demo tenants, plans and events
	$(BIN)/python src/main.py --init-demo --port $(PORT)

# Every test carries a marker saying what it needs (pyproject's [tool.pytest.ini_options], tests/conftest.py):
# unit, integration (Python alone), kafka (a broker: Java), lake (PostgreSQL), browser (Chromium).
test: install-test browser postgres jdk  ## the whole suite, every marker, Kafka tests included (starts a local broker)
	$(BIN)/python -m pytest -ra

test-fast: install-test browser postgres  ## everything but the Kafka tests (no Java needed)
	$(BIN)/python -m pytest -ra -m "not kafka"

test-unit: install-test  ## the unit tests: in-process, under a minute, no Java, PostgreSQL or Chromium needed
	$(BIN)/python -m pytest -ra -m unit

bench: install-test postgres
	PYTHONPATH=src $(BIN)/python -m bench

bench-kafka: install-test jdk  ## producer, consumer, end to end, against the raw kafka-python consume ceiling
	PYTHONPATH=src $(BIN)/python -m bench.kafka_pipeline --events 200000 --runs 3

bench-cluster: install-test postgres jdk  ## cluster mode on a DuckLake: 1-3 nodes, commit, hand-over, billing
	PYTHONPATH=src $(BIN)/python -m bench.cluster --events 100000 --runs 3

bench-quick: install-test postgres
	PYTHONPATH=src $(BIN)/python -m bench --quick

kafka-start:
	PYTHON=$(BIN)/python scripts/kafka-local.sh start

kafka-stop:
	scripts/kafka-local.sh stop

schemas: install  ## regenerate the checked-in JSON Schema files
	$(BIN)/python -m usage_metering.schemas.schema_files

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
