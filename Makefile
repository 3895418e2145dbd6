# Everything installs into .venv from nothing; Kafka tests fetch the broker's jars with Maven.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8005

.PHONY: install demo test test-fast bench bench-quick kafka-start kafka-stop schemas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install  ## the demo server on port 8005 with demo tenants, plans and events
	$(BIN)/python src/main.py --init-demo --port $(PORT)

test: install  ## the whole suite, Kafka tests included (starts a local broker)
	$(BIN)/python -m pytest

test-fast: install  ## everything but the Kafka tests
	$(BIN)/python -m pytest --ignore=tests/kafka

bench: install
	PYTHONPATH=src $(BIN)/python -m bench

bench-quick: install
	PYTHONPATH=src $(BIN)/python -m bench --quick

kafka-start:
	PYTHON=$(BIN)/python scripts/kafka-local.sh start

kafka-stop:
	scripts/kafka-local.sh stop

schemas: install  ## regenerate the checked-in JSON Schema files
	$(BIN)/python -m usage_metering.schemas.schema_files

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
