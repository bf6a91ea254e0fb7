# Every target creates .venv itself, so a fresh clone needs only Python 3 and the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo drives itself with a light request mix (127.0.0.1, 10 minutes) so the dashboard is alive
# on first open; `make demo DEMO_ARGS=` serves it quiet.
DEMO_ARGS ?= --traffic

.PHONY: demo test lint typecheck pytest bench bench-instructions rules clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m otel_flask_monitor.demo $(DEMO_ARGS)

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
	$(BIN)/python benchmarks/objective_counter.py
	$(BIN)/python benchmarks/backend_down.py
	$(BIN)/python benchmarks/http_throughput.py
	$(BIN)/python benchmarks/query_redaction.py

# Deterministic overhead figures, the six variants of benchmarks/variants.py (needs Debian's
# valgrind; two callgrind runs at a time: 4 to 11 minutes on 2 cores, with the machine's load).
bench-instructions: $(STAMP)
	$(BIN)/python benchmarks/overhead_instructions.py --short 100 --long 300 --jobs 2

# The compose stack's alert rules, generated from the demo's objectives (a test checks they are current).
rules: $(STAMP)
	$(BIN)/python -m otel_flask_monitor rules --app 'otel_flask_monitor.demo.app:create_app()' \
		--service-name shop -o deploy/prometheus/rules/shop-objectives.rules.yml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
