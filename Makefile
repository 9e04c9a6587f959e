# nnbench: every target that needs the environment depends on `setup`, so on a fresh machine
# `make test` or `make sweep` alone does the whole set-up (venv + pinned install).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test sweep report check lint data reproduce perf time clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m bench.engines.native
	touch $(STAMP)

test: setup
	$(BIN)/pytest -q --benchmark-disable

sweep: setup
	$(BIN)/bench sweep studies/

report: setup
	$(BIN)/bench report --out results/report

check: setup
	$(BIN)/bench check

lint: setup
	$(BIN)/ruff check bench tests
	$(BIN)/lint-imports

data: setup
	$(BIN)/bench data

reproduce: setup
	$(BIN)/bench reproduce

perf: setup
	$(BIN)/pytest tests/perf -q -p no:xdist --benchmark-storage=file://results/perf/benchmarks --benchmark-autosave

time: setup
	$(BIN)/bench time

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
