# edgefit — set-up and checks. `make install` builds .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: install test test-all lint bench clean

install:
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: it takes the local CPU wheel instead of a multi-GB CUDA build.
	# constraints.txt pins every package to the version CI tests (torch to 2.13.0+cpu).
	$(BIN)/pip install --quiet -c constraints.txt $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/deploy --version

# ruff first: a lint failure stops `make test` before the (long) suite runs.
test: lint
	$(BIN)/python -m pytest -m "not gpu and not slow" --agent-local -q --durations=15

# everything that runs without a GPU, the tests marked `slow` included (about 3 minutes more)
test-all: lint
	$(BIN)/python -m pytest -m "not gpu" --agent-local -q

lint:
	$(BIN)/ruff check pipeline tests bench

bench:
	mkdir -p bench/results
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
