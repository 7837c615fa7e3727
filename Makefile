# Two commands for a newcomer: `make train` and `make test`. Both create .venv if it is
# missing and install the project (pinned in pyproject.toml) before running.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train test test-fast bench gpu-check lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/python train.py $(ARGS)

# The whole suite (what CI runs, .ci/run).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything but the end-to-end runs that train models (`slow`): a quick check while editing.
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m ser.tools.bench out=bench.json

# One-shot GPU check (ser/tools/gpu_check.py): JSON records in $(GPU_CHECK_OUT)/ within
# 8 minutes; on a machine without CUDA a dry run at toy sizes on the CPU.
GPU_CHECK_OUT ?= gpu-check
gpu-check: install
	$(BIN)/python -m ser.tools.gpu_check out=$(GPU_CHECK_OUT)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
