# The project's front door. Every target sets up the virtualenv it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements/dev.lock

.PHONY: setup serve demo test test-latest lock lint format bench clean

# The development environment is exactly what requirements/dev.lock names, hash-checked,
# so a fresh clone gets what CI tested; the package itself is installed without looking
# for dependencies and built offline by the locked hatchling. (`make test-latest` installs
# the newest versions pyproject.toml allows instead, into .venv-latest.)
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
ifeq ($(VENV),.venv-latest)
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
else
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
endif
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
## pytest runs one process per core (pytest-xdist): the suite mostly waits on servers and
## sockets, so two processes on two cores take half the time of one (README, Development).
test: lint
	scripts/test-tools
	$(BIN)/pytest --numprocesses auto
	cd clients/js && HUB_PYTHON=$(abspath $(BIN))/python node $(NODE_WS) --test test/

## The same suite on the newest dependency versions pyproject.toml allows, in .venv-latest:
## run it whenever you refresh the lock, so a breaking release shows up on purpose.
test-latest:
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest

## Re-resolve requirements/dev.lock to the newest versions pyproject.toml allows (every
## platform, Python >= 3.11, with hashes), with uv in a throwaway .venv-lock (so a lock
## that no longer installs can still be refreshed); then `make test` and `make test-latest`.
lock:
	$(PYTHON) -m venv --clear .venv-lock
	.venv-lock/bin/python -m pip install --quiet uv
	.venv-lock/bin/uv pip compile pyproject.toml --extra dev --universal --generate-hashes \
		--python-version 3.11 --upgrade --quiet -o $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

## Measure ingest, fan-out against peers, idle connections and a soak; each prints a
## table and writes bench/results/<date>-<name>.json. Fan-out needs Node.js and npm.
bench: $(STAMP) bench/fanout/node_modules
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/collector.py
	$(BIN)/python bench/fanout_core.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/multinode.py
	$(BIN)/python bench/connections.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/attacks.py
	scripts/test-tools
	$(BIN)/python bench/viewer.py

bench/fanout/node_modules: bench/fanout/package-lock.json
	cd bench/fanout && npm ci --no-audit --no-fund
	touch $@

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf .venv .venv-latest .venv-lock .mypy_cache .grimp_cache .import_linter_cache .pytest_cache .ruff_cache .hypothesis
