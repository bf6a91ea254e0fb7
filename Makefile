# Every target creates .venv itself, so a fresh clone needs only Python 3 and the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-instructions clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m otel_flask_monitor.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/aggregates.py
	$(BIN)/python benchmarks/multiprocess_merge.py
	$(BIN)/python benchmarks/backend_down.py
	$(BIN)/python benchmarks/http_throughput.py

# Deterministic overhead figures, the six variants of benchmarks/variants.py (needs Debian's
# valgrind; two callgrind runs at a time: 4 to 11 minutes on 2 cores, with the machine's load).
bench-instructions: $(STAMP)
	$(BIN)/python benchmarks/overhead_instructions.py --short 100 --long 300 --jobs 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
