# Two commands for a newcomer: `make train` and `make test`. Both create .venv if it is
# missing and install the project before running: `make train` the package alone,
# `make test` with the `dev` extra (every extra and the test tools). Both install the
# exact releases of constraints.txt (pyproject.toml states the ranges).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt
# An install is current while pyproject.toml and constraints.txt are unchanged; the stamp
# names what was installed: `base` (the package) or `dev` (which includes the package).
HASH := $(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)
BASE_STAMP := $(VENV)/.installed-base-$(HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(HASH)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install install-dev train test test-fast bench gpu-check lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(DEV_STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# The package alone, unless a current dev install (a superset) is already there.
install: $(if $(wildcard $(DEV_STAMP)),$(DEV_STAMP),$(BASE_STAMP))

install-dev: $(DEV_STAMP)

train: install
	$(BIN)/python train.py $(ARGS)

# The whole suite (what CI runs, .ci/run).
test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything but the end-to-end runs that train models (`slow`): a quick check while editing.
test-fast: install-dev
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The benchmarks live in benchmarks/, beside the package and not installed with it (run
# from this folder); they compare with librosa (a dev tool), hence the dev install.
bench: install-dev
	$(BIN)/python -m benchmarks.bench out=bench.json

# One-shot GPU check (benchmarks/gpu_check.py): JSON records in $(GPU_CHECK_OUT)/ within
# 8 minutes; on a machine without CUDA a dry run at toy sizes on the CPU.
GPU_CHECK_OUT ?= gpu-check
gpu-check: install-dev
	$(BIN)/python -m benchmarks.gpu_check out=$(GPU_CHECK_OUT)

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
