# The project's front door. Every target sets up the virtualenv it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup serve demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Start the hub on embedded defaults: http://localhost:3001 (API docs at /docs).
serve: $(STAMP)
	$(BIN)/executor-streamer serve

## Publish a simulated agent run into the hub that `make serve` started.
demo: $(STAMP)
	$(BIN)/executor-streamer demo

# Node 20 has WebSocket behind a flag; from 22 on it is always there.
NODE_WS = $(shell node -e 'process.stdout.write(typeof WebSocket === "undefined" ? "--experimental-websocket" : "")')

## Lint, type-check and run every test: Python, then the JavaScript SDK against a real hub.
test: lint
	scripts/test-tools
	$(BIN)/pytest
	cd clients/js && HUB_PYTHON=$(abspath $(BIN))/python node $(NODE_WS) --test test/

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## Measure ingest, fan-out against peers, idle connections and a soak; each prints a
## table and writes bench/results/<date>-<name>.json. Fan-out needs Node.js and npm.
bench: $(STAMP) bench/fanout/node_modules
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/collector.py
	$(BIN)/python bench/fanout_core.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/multinode.py
	$(BIN)/python bench/connections.py
	$(BIN)/python bench/soak.py
	scripts/test-tools
	$(BIN)/python bench/viewer.py

bench/fanout/node_modules: bench/fanout/package-lock.json
	cd bench/fanout && npm ci --no-audit --no-fund
	touch $@

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
