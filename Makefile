# atp: `make run` serves the embedded service with demo data; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export ATP_ADMIN_TOKEN ?= dev-admin-token

.PHONY: install run test test-fast lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

## The embedded service (SQLite ledger, no servers needed) with the demo catalogue.
run: install
	$(BIN)/atp migrate
	$(BIN)/atp demo
	@echo "atp on http://$${ATP_HOST:-127.0.0.1}:$${ATP_PORT:-8000}  (admin token: $$ATP_ADMIN_TOKEN)"
	@echo "planner page: http://$${ATP_HOST:-127.0.0.1}:$${ATP_PORT:-8000}/ui  (sign in with the admin token)"
	$(BIN)/atp serve

## The whole suite: unit, integration (real PostgreSQL) and end-to-end tests.
test: install
	$(BIN)/pytest

## Only what needs no servers.
test-fast: install
	$(BIN)/pytest -m "not integration and not e2e" tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m loadtests.bench_reservations

clean:
	rm -rf $(VENV) .atp .pytest_cache .mypy_cache .ruff_cache
