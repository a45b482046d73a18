# happyhashtags: `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml setup.py src/happyhashtags/_speedups*.pyx src/happyhashtags/_speedups*.pxi | cksum | cut -d' ' -f1)
APP    := $(VENV)/.installed-app-$(HASH)
DEV    := $(VENV)/.installed-dev-$(HASH)
DATABASE ?= sqlite:///happyhashtags.db

.PHONY: help setup run migrate test lint format bench chaos clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The project with every optional connector (what `make run` needs).
$(APP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[all]'
	rm -f $(VENV)/.installed-app-*
	touch $@

# ... plus the test and lint tools.
$(DEV): $(APP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-dev-*
	touch $@

setup: $(DEV)  ## create .venv and install the project with its test tools

migrate: $(APP)  ## migrate the database (DATABASE=url, default the embedded SQLite)
	$(BIN)/happyhashtags migrate --database '$(DATABASE)'

run: migrate  ## count the built-in demo stream into the embedded SQLite and print the top ten
	$(BIN)/happyhashtags run --source demo --database '$(DATABASE)'

test: setup  ## run the whole test suite (needs Postgres and NATS on loopback)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup  ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check setup.py src tests benchmarks scripts
	$(BIN)/ruff format --check setup.py src tests benchmarks scripts
	$(BIN)/mypy

format: setup  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix setup.py src tests benchmarks scripts
	$(BIN)/ruff format setup.py src tests benchmarks scripts

bench: setup  ## benchmarks (see docs/benchmarks.md)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

chaos: setup  ## long crash test of the queue: SIGKILL process, restart NATS and Postgres (CHAOS_ARGS=--messages N --kills K --seed S)
	$(BIN)/python scripts/chaos.py $(CHAOS_ARGS)

clean:  ## remove the venv, caches, the compiled module and the embedded database
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis happyhashtags.db* build
	rm -f src/happyhashtags/_speedups.c src/happyhashtags/_speedups.*.so
