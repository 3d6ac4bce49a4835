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
	# torch first, pinned: it takes the local CPU wheel instead of a multi-GB CUDA build
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/deploy --version

test:
	$(BIN)/python -m pytest -m "not gpu and not hil" -q

lint:
	$(BIN)/ruff check pipeline tests bench

bench:
	mkdir -p bench/results
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
