# The two commands of the README:
#   make demo   builds the demo inputs, predicts, publishes, catalogues, serves (installs into .venv first)
#   make test   lint, type check and the whole test suite (what CI runs)
#   make test-fast  the tests not marked slow, for development (about 2.5 minutes)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SRC := src tests bench scripts

.PHONY: demo test test-fast lint format bench clean system-packages viewer

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime only: the demo needs no PyTorch.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Tests add the dev tools and the [torch] extra (CPU build pinned in pyproject.toml).
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	touch $@ $(VENV)/.runtime

# Builds, predicts, publishes and catalogues (idempotent), then serves until Ctrl-C.
demo: $(VENV)/.runtime
	$(BIN)/sdmatlas demo run
	$(BIN)/sdmatlas serve

lint: $(VENV)/.dev
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy

# Debian packages of the real servers the tests start (PostgreSQL 15 + PostGIS 3):
# installed with apt where missing (root or sudo), a no-op when present.
system-packages:
	bash scripts/install-system-packages.sh

test: lint system-packages
	$(BIN)/pytest

# No live servers, browser, Redis or PostgreSQL: the slow marks are in tests/ (pytestmark).
test-fast: $(VENV)/.dev
	$(BIN)/pytest -m "not slow" -q

format: $(VENV)/.dev
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

bench: $(VENV)/.dev
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/queries.py
	$(BIN)/python bench/areas.py
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/tiles.py
	$(BIN)/python bench/ogc.py
	$(BIN)/python bench/robustness.py

# Re-vendor the web viewer's libraries from npm (the output is committed; needs Node.js).
viewer:
	bash scripts/build-viewer.sh

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
